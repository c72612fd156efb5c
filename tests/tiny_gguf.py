"""A tiny llama-architecture GGUF model written from scratch, for tests of the model's child
process that must not wait for the real model: it loads in milliseconds and generates
nonsense quickly (random weights, a vocabulary of single bytes)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

# GGUF value types, and the one tensor type used here.
UINT32, FLOAT32, STRING, ARRAY = 4, 6, 8, 9
INT32 = 5
GGML_F32 = 0
ALIGNMENT = 32
# Token types of a sentencepiece vocabulary.
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def _value(kind: int, value: object) -> bytes:
    if kind == UINT32:
        return struct.pack("<I", value)
    if kind == INT32:
        return struct.pack("<i", value)
    if kind == FLOAT32:
        return struct.pack("<f", value)
    if kind == STRING:
        return _string(str(value))
    raise ValueError(kind)


def _kv(key: str, kind: int, value: object, item: int | None = None) -> bytes:
    head = _string(key) + struct.pack("<I", kind)
    if kind != ARRAY:
        return head + _value(kind, value)
    items = list(value)  # type: ignore[call-overload]
    assert item is not None
    body = b"".join(_value(item, v) for v in items)
    return head + struct.pack("<IQ", item, len(items)) + body


def write_tiny_gguf(path: Path, *, layers: int = 2, embd: int = 64, context: int = 32_768) -> Path:
    heads, ff = 4, 128
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256
    # A chat template's markers, as control tokens, as in real chat models.
    tokens += ["<|im_start|>", "<|im_end|>"]
    types += [CONTROL, CONTROL]
    arch = "llama"
    metadata = [
        _kv("general.architecture", STRING, arch),
        _kv("general.name", STRING, "tiny"),
        _kv(f"{arch}.context_length", UINT32, context),
        _kv(f"{arch}.embedding_length", UINT32, embd),
        _kv(f"{arch}.block_count", UINT32, layers),
        _kv(f"{arch}.feed_forward_length", UINT32, ff),
        _kv(f"{arch}.attention.head_count", UINT32, heads),
        _kv(f"{arch}.attention.head_count_kv", UINT32, heads),
        _kv(f"{arch}.attention.layer_norm_rms_epsilon", FLOAT32, 1e-5),
        _kv(f"{arch}.rope.dimension_count", UINT32, embd // heads),
        _kv("tokenizer.ggml.model", STRING, "llama"),
        _kv("tokenizer.ggml.tokens", ARRAY, tokens, STRING),
        _kv("tokenizer.ggml.scores", ARRAY, [0.0] * len(tokens), FLOAT32),
        _kv("tokenizer.ggml.token_type", ARRAY, types, INT32),
        _kv("tokenizer.ggml.unknown_token_id", UINT32, 0),
        _kv("tokenizer.ggml.bos_token_id", UINT32, 1),
        _kv("tokenizer.ggml.eos_token_id", UINT32, 2),
        _kv("tokenizer.chat_template", STRING, CHAT_TEMPLATE),
    ]
    rng = np.random.default_rng(0)
    vocab = len(tokens)
    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("token_embd.weight", (embd, vocab)),
        ("output_norm.weight", (embd,)),
        ("output.weight", (embd, vocab)),
    ]
    for i in range(layers):
        shapes += [
            (f"blk.{i}.attn_norm.weight", (embd,)),
            (f"blk.{i}.attn_q.weight", (embd, embd)),
            (f"blk.{i}.attn_k.weight", (embd, embd)),
            (f"blk.{i}.attn_v.weight", (embd, embd)),
            (f"blk.{i}.attn_output.weight", (embd, embd)),
            (f"blk.{i}.ffn_norm.weight", (embd,)),
            (f"blk.{i}.ffn_gate.weight", (embd, ff)),
            (f"blk.{i}.ffn_up.weight", (embd, ff)),
            (f"blk.{i}.ffn_down.weight", (ff, embd)),
        ]
    infos, blobs, offset = [], [], 0
    for name, shape in shapes:
        if len(shape) == 1:
            data = np.ones(shape, dtype=np.float32)
        else:  # GGUF lists dimensions innermost first; numpy wants them outermost first
            data = rng.normal(0.0, 0.05, size=shape[::-1]).astype(np.float32)
        blob = data.tobytes()
        infos.append(
            _string(name)
            + struct.pack("<I", len(shape))
            + b"".join(struct.pack("<Q", d) for d in shape)
            + struct.pack("<IQ", GGML_F32, offset)
        )
        padded = blob + bytes(-len(blob) % ALIGNMENT)
        blobs.append(padded)
        offset += len(padded)
    header = struct.pack("<4sIQQ", b"GGUF", 3, len(shapes), len(metadata))
    head = header + b"".join(metadata) + b"".join(infos)
    head += bytes(-len(head) % ALIGNMENT)
    path.write_bytes(head + b"".join(blobs))
    return path


if __name__ == "__main__":
    import sys

    print(write_tiny_gguf(Path(sys.argv[1])))

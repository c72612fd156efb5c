"""Memory and time to load a context file, or to find it is binary.

Each case writes a file, then loads it with `deeprlm.load_paths` in a fresh process, so
its peak memory is its own. Binary data is judged as the file streams by, so a huge binary
file costs a chunk; a text file is decoded once, from a memory map.

    .venv/bin/python benchmarks/context_load.py [--mb 200]

Columns: the file's size; the verdict; wall time; the peak of Python's heap during the
load (tracemalloc) and the process's peak resident memory above its start (ru_maxrss), each
also as a multiple of the text's size (VmHWM). Resident memory counts the file's pages
while they are mapped: they are the page cache, shared and reclaimable, not a copy the
process owns.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GB = 1 << 30


def write_case(name: str, folder: Path, mb: int) -> Path:
    path = folder / name
    lines = {
        "ascii.txt": b"The quick brown fox jumps over the lazy dog, again and again.\n",
        "latin1.txt": "Größe, café, naïve, déjà vu: ça va très bien.\n".encode("latin-1"),
        "utf16.txt": "héllo wörld, plain words in UTF-16 with a mark.\n".encode("utf-16-le"),
    }
    with open(path, "wb") as f:
        if name in lines:
            if name == "utf16.txt":
                f.write(b"\xff\xfe")
            block = lines[name] * ((1 << 20) // len(lines[name]))
            for _ in range(mb):  # a megabyte at a time: this process stays small
                f.write(block)
        elif name == "zeros-2gb.img":
            f.truncate(2 * GB)  # sparse: no disk, all NULs
        elif name == "text-then-nul-2gb.dat":
            f.write(b"plain text " * 1000)
            f.truncate(f.tell() + 2 * GB)
    return path


def peak_rss() -> int:
    """This process's peak resident memory in bytes. VmHWM, not ru_maxrss: a child's
    ru_maxrss starts at its parent's."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(path: str) -> dict[str, object]:
    """Runs in a fresh process: loads one file and reports what it cost."""
    import tracemalloc

    from deeprlm import InputError, load_paths

    base = peak_rss()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        context, _ = load_paths([path])
        verdict, chars = "text", len(context)
    except InputError as err:
        verdict, chars = ("binary" if "binary" in str(err) else str(err)), 0
    wall = time.perf_counter() - started
    traced = tracemalloc.get_traced_memory()[1]
    rss = peak_rss() - base
    return {"verdict": verdict, "chars": chars, "wall": wall, "traced": traced, "rss": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the text files")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    names = ["ascii.txt", "latin1.txt", "utf16.txt", "zeros-2gb.img", "text-then-nul-2gb.dat"]
    columns = ["file", "size MB", "verdict", "wall s", "heap MB", "heap ×", "rss MB", "rss ×"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---:" for _ in columns) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path = write_case(name, Path(tmp), args.mb)
            done = subprocess.run(
                [sys.executable, __file__, "--one", str(path)],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(done.stdout)
            # These texts take one byte a character in a str: chars is the text's size.
            chars = r["chars"]
            size = os.path.getsize(path) / (1 << 20)
            heap, rss = r["traced"] / (1 << 20), r["rss"] / (1 << 20)
            cells = [
                name,
                f"{size:,.0f}",
                r["verdict"],
                f"{r['wall']:.2f}",
                f"{heap:,.1f}",
                f"{r['traced'] / chars:.2f}" if chars else "-",
                f"{rss:,.1f}",
                f"{r['rss'] / chars:.2f}" if chars else "-",
            ]
            print("| " + " | ".join(cells) + " |", flush=True)
            path.unlink()


if __name__ == "__main__":
    main()

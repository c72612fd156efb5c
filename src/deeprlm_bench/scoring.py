"""Scorers shared by the task families: OOLONG's answer parsing, pair F1, normalised exact
match and multiple-choice letter extraction. Each takes the model's raw answer text.

OOLONG's rules: the answer is the text after the last colon (the prompt asks for forms like
`Label: location`), with markdown emphasis and surrounding quotes and punctuation stripped;
numeric answers score `0.75 ** abs(gold - pred)`, comparisons score on which of the three
relations the answer names, everything else is an exact match, case-insensitive.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

COMPARISONS = ("more common than", "less common than", "same frequency as")

_EMPHASIS = re.compile(r"[*_`]")
_INT = re.compile(r"-?\d[\d,]*")
_PAIR = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ANSWER_TAG = re.compile(r"answer\s*(?:is)?\s*:", re.IGNORECASE)


def after_last_colon(answer: str) -> str:
    """The OOLONG parse: the text after the last colon, cleaned of markdown and quotes."""
    text = answer.rsplit(":", 1)[-1]
    text = _EMPHASIS.sub("", text).strip()
    return text.strip(" \t\n\"'.[]()")


def oolong_numeric(gold: int, answer: str) -> float:
    """`0.75 ** abs(gold - pred)`, or 0 when no number can be read after the last colon."""
    match = _INT.search(after_last_colon(answer))
    if not match:
        return 0.0
    try:
        pred = int(match.group().replace(",", ""))
    except ValueError:
        return 0.0
    return 0.75 ** abs(gold - pred)


def oolong_exact(gold: str, answer: str) -> float:
    return float(after_last_colon(answer).lower() == gold.lower())


def oolong_comparison(gold: str, answer: str) -> float:
    """Full credit when the parsed answer names the gold relation and no other one."""
    parsed = after_last_colon(answer).lower()
    named = [relation for relation in COMPARISONS if relation in parsed]
    return float(named == [gold])


def parse_pairs(answer: str, *, ordered: bool = False) -> set[tuple[int, int]]:
    """Every `(a, b)` in the answer; unordered pairs are put lower first."""
    pairs = set()
    for a, b in _PAIR.findall(answer):
        x, y = int(a), int(b)
        if x == y:
            continue
        pairs.add((x, y) if ordered else (min(x, y), max(x, y)))
    return pairs


def f1(gold: Iterable[tuple[int, int]], pred: Iterable[tuple[int, int]]) -> float:
    gold_set, pred_set = set(gold), set(pred)
    if not gold_set and not pred_set:
        return 1.0
    hits = len(gold_set & pred_set)
    if hits == 0:
        return 0.0
    precision = hits / len(pred_set)
    recall = hits / len(gold_set)
    return 2 * precision * recall / (precision + recall)


def normalize(text: str) -> str:
    """Lowercase, no punctuation, no articles, single spaces (SQuAD-style)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def final_answer_text(answer: str) -> str:
    """The part after the last `Answer:` tag if there is one, else the whole text."""
    parts = _ANSWER_TAG.split(answer)
    return parts[-1].strip()


def normalized_exact(gold: str, answer: str) -> float:
    return float(normalize(final_answer_text(answer)) == normalize(gold))


_LETTER_PATTERNS = (
    re.compile(r"answer\s*(?:is)?\s*[:：]?\s*\(?\s*((?-i:[A-D]))\b", re.IGNORECASE),
    re.compile(r"\(([A-D])\)"),
    re.compile(r"^\s*([A-D])\s*(?:[).:]|$)", re.MULTILINE),
)


def extract_letter(answer: str) -> str | None:
    """The chosen option: the last `Answer: X` / `answer is (X)`, else the last `(X)`, else a
    line that starts with the letter alone."""
    for pattern in _LETTER_PATTERNS:
        found = pattern.findall(answer)
        if found:
            return found[-1].upper()
    return None


def letter_accuracy(gold: str, answer: str) -> float:
    return float(extract_letter(answer) == gold)


def contains(gold: str, answer: str) -> float:
    """RULER's string match: the gold value appears anywhere in the answer."""
    return float(gold.lower() in answer.lower())

"""Text measures with no model: normalisers, sentences, copies, n-gram diversity, ROUGE-L.

Two normalisations, for two questions:
- `normalise`: lower case, whitespace collapsed, punctuation kept. What counts as "the
  same" response or source text (dedup, the dataset split, template answers).
- `word_key`: lower-case words only. Copies that differ in case, spacing or
  punctuation match (a copied instruction, a chosen that copies the rejected).

    normalise("Hello,  World!")   # 'hello, world!'
    word_key("Hello,  World!")    # 'hello world'
"""

from __future__ import annotations

import re

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
COPY_MIN_CHARS = 40
"""A candidate at least this long found inside the text counts as copied from it."""


def normalise(text: str) -> str:
    """Lower case, whitespace collapsed (punctuation kept)."""
    return " ".join(re.findall(r"\S+", text.lower()))


def word_key(text: str) -> str:
    """Lower-case words only, joined by single spaces."""
    return " ".join(re.findall(r"\w+", text.lower()))


def sentences(text: str) -> list[str]:
    """Rough sentence split on end punctuation and newlines (empty pieces dropped)."""
    return [s.strip() for s in _SENTENCE.split(text or "") if s.strip()]


def first_sentence(text: str) -> str:
    parts = sentences(text)
    return parts[0] if parts else ""


def is_copy(candidate: str, text: str) -> bool:
    """Whether `candidate` copies `text`: the same words, or (when at least
    `COPY_MIN_CHARS` long) a stretch of its words."""
    cand, src = word_key(candidate), word_key(text)
    return bool(cand) and (cand == src or (len(cand) >= COPY_MIN_CHARS and cand in src))


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct word n-grams / all word n-grams over `texts` (0.0 when there are none)."""
    grams: list[tuple[str, ...]] = []
    for t in texts:
        words = re.findall(r"\w+", t.lower())
        grams.extend(zip(*(words[i:] for i in range(n)), strict=False))
    return len(set(grams)) / len(grams) if grams else 0.0


def rouge_l(preds: list[str], refs: list[str]) -> list[float]:
    """ROUGE-L F1 of each prediction against its reference (stemmed words)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs, strict=True)]

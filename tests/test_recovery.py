"""Recovery metrics on hand-made pairs with known answers."""

from __future__ import annotations

import pytest

from saferinstruct.evaluate.recovery import score_rows, summarize
from saferinstruct.measures.text import first_sentence, rouge_l


def test_first_sentence():
    assert first_sentence("Hello there. How are you?") == "Hello there."
    assert first_sentence("\n\nLine one\nLine two") == "Line one"
    assert first_sentence("") == ""


def test_rouge_l_known_values():
    assert rouge_l(["the cat sat"], ["the cat sat"]) == [pytest.approx(1.0)]
    assert rouge_l(["dog runs"], ["the cat sat"]) == [0.0]
    # LCS "the cat" = 2 of 3 and 2 of 2 tokens: F1 = 2*(2/3*1)/(2/3+1) = 0.8
    assert rouge_l(["the cat"], ["the cat sat"])[0] == pytest.approx(0.8)


@pytest.mark.slow
def test_score_rows_and_summary():
    preds = ["What is the capital of France?", "", "Write a poem about the sea."]
    refs = ["What is the capital of France?", "Name a colour.", "Cook pasta for two."]
    outputs = ["Paris.", "Blue.", "Boil water, add pasta."]
    rows = score_rows(preds, refs, outputs)
    assert rows[0]["rouge_l"] == pytest.approx(1.0) and rows[0]["cosine"] == pytest.approx(
        1.0, abs=1e-4
    )
    assert rows[0]["exact"] == 1.0
    assert rows[1] == {"rouge_l": 0.0, "cosine": 0.0, "exact": 0.0, "copy": 0.0, "empty": 1.0}
    assert rows[2]["cosine"] < 0.5
    s = summarize(rows, ["g1", "g1", "g2"])
    assert s["n"] == 3
    assert s["exact_match"] == pytest.approx(1 / 3, abs=1e-3)
    assert s["by_generator"]["g1"]["n"] == 2
    copied = score_rows(
        ["Boil water, add pasta and salt now please."] * 1,
        ["Cook pasta."],
        ["Boil water, add pasta and salt now please. Drain."],
    )
    assert copied[0]["copy"] == 1.0


def test_examples_are_truncated_behind_a_warning():
    from saferinstruct.evaluate.recovery import examples_markdown

    long_text = "word " * 200
    md = examples_markdown(
        [long_text, "short | text", "x", "y"],
        ["induced one", "", "i3", "i4"],
        ["ref one", "ref two", "r3", "r4"],
        ["hate", "hate", "hate", "self-harm"],
        per_group=2,
    )
    assert md.startswith("# Instruction recovery") and "Content warning" in md
    assert long_text.strip() not in md and max(len(line) for line in md.splitlines()) < 600
    assert "## hate" in md and "## self-harm" in md
    assert "r3" not in md  # two per group
    assert "(empty)" in md and "short \\| text" in md

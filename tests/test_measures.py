"""The measures the stages and the evaluations share (`measures/`): text normalisers,
copy checks, hash splits, and similarity measures over vectors, on known answers."""

from __future__ import annotations

import numpy as np
import pytest

from saferinstruct.measures import similarity
from saferinstruct.measures.embed import embed
from saferinstruct.measures.similarity import (
    max_neighbour_cosine,
    mean_pairwise_distance,
    template_share,
)
from saferinstruct.measures.splits import hash_fraction, seeded_fraction, split_of
from saferinstruct.measures.text import (
    first_sentence,
    is_copy,
    normalise,
    sentences,
    word_key,
)


def test_the_two_normalisations():
    assert normalise("Hello,  World!\n") == "hello, world!"
    assert word_key("Hello,  World!\n") == "hello world"
    assert normalise("a.b") != normalise("a b") and word_key("a.b") == word_key("a b")


def test_sentences_and_first_sentence():
    assert sentences("One. Two!\n\nThree?  ") == ["One.", "Two!", "Three?"]
    assert first_sentence("  Preheat the oven. Then bake.") == "Preheat the oven."
    assert first_sentence("") == ""


def test_is_copy():
    text = "The quick brown fox jumps over the lazy dog near the quiet river bank today."
    assert is_copy("the QUICK brown fox, jumps over the lazy dog near the quiet river", text)
    assert not is_copy("the quick brown fox", text)  # short pieces are not copies
    assert is_copy(text.upper(), text) and not is_copy("", text)


def test_hash_splits_are_stable_and_near_their_share():
    ids = [str(i) for i in range(2000)]
    share = sum(split_of(i, 0.1) == "validation" for i in ids) / len(ids)
    assert 0.08 <= share <= 0.12
    assert [split_of(i, 0.1) for i in ids[:50]] == [split_of(i, 0.1) for i in ids[:50]]
    assert 0.0 <= hash_fraction("x") <= 1.0 and hash_fraction("x") == hash_fraction("x")
    assert seeded_fraction("x", 0) != seeded_fraction("x", 1)


def test_template_share_near_copies():
    texts = [
        "Write a poem about the ocean.",
        "Write a poem about the ocean!",
        "Explain how vaccines work.",
        "Give three tips for staying calm.",
    ]
    vecs = embed(texts)
    s = template_share(texts, vecs, 0.95)
    assert s["exact_duplicate_share"] == 0.0 and s["top_response_share"] == 0.25
    assert s["near_template_share"] == pytest.approx(0.5)
    assert template_share(texts, vecs, 0.999)["near_template_share"] == 0.0
    assert template_share([], None, 0.9)["n"] == 0
    twice = template_share(["Same.", "same."], None, 0.9)  # exact twins need no vectors
    assert twice["exact_duplicate_share"] == 1.0 and twice["near_template_share"] == 1.0


def test_template_share_known_answers():
    assert template_share([], None, 0.9)["n"] == 0
    assert template_share(["Only one answer."], None, 0.9) == {
        "n": 1,
        "exact_duplicate_share": 0.0,
        "top_response_share": 1.0,
        "near_template_share": 0.0,
        "distinct_share": 1.0,
    }
    texts = [
        "I can't help with that.",
        "I can't help with that.",
        "i can't   help with THAT.",
        "Here is a simple recipe for sourdough bread.",
        "Vaccines train the immune system to recognise germs.",
    ]
    s = template_share(texts, embed(texts), 0.9)
    assert s["exact_duplicate_share"] == pytest.approx(0.6)
    assert s["top_response_share"] == pytest.approx(0.6)
    assert s["near_template_share"] == pytest.approx(0.6)
    assert s["distinct_share"] == pytest.approx(0.6)


def test_max_neighbour_cosine_blocks(monkeypatch):
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(7, 5)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, -1)
    monkeypatch.setattr(similarity, "BLOCK", 3)
    assert np.allclose(max_neighbour_cosine(vecs), sims.max(axis=1))
    assert max_neighbour_cosine(vecs[:1]).tolist() == [-1.0]


def test_mean_pairwise_distance_from_vectors():
    e = np.eye(3, dtype=np.float32)
    assert mean_pairwise_distance(e) == pytest.approx(1.0)
    assert mean_pairwise_distance(np.ones((4, 1), dtype=np.float32)) == pytest.approx(0.0)
    assert mean_pairwise_distance(e[:1]) is None

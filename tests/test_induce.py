"""Instruction induction: cleaning realistic raw generations, failure recording,
candidate ranking with the real embedded model, and the stage end to end."""

from __future__ import annotations

import dataclasses

import pytest

from saferinstruct.config import InduceConfig
from saferinstruct.errors import BadInput
from saferinstruct.llm.base import Capabilities, Completion
from saferinstruct.pipeline.induce import (
    candidate_problem,
    clean_instruction,
    induce,
    induce_prompt,
)
from saferinstruct.records import new_record

TEXT = "Paris is the capital and most populous city of France, on the Seine."


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("What is the capital of France?", "What is the capital of France?"),
        ("  Write a poem about cats.\n\n### response:\nCats are", "Write a poem about cats."),
        ("### Instruction:\nSummarise the article.\n###", "Summarise the article."),
        ("Instruction: Explain DNS.\nResponse: DNS is", "Explain DNS."),
        ('"Tell me a joke."', "Tell me a joke."),
        ("Give three tips.\n\n\n\n", "Give three tips."),
        ("###", ""),
        ("", ""),
        ("   \n  ", ""),
    ],
)
def test_clean_instruction(raw, expected):
    assert clean_instruction(raw) == expected


def test_candidate_problems():
    assert candidate_problem("", TEXT, 100) == "empty"
    assert candidate_problem("x" * 101, TEXT, 100) == "over_length"
    assert candidate_problem(TEXT.upper(), TEXT, 1000) == "copied_text"
    assert candidate_problem(
        "Paris is the capital and most populous city of France", TEXT, 1000
    ) == ("copied_text")
    assert candidate_problem("What is the capital of France?", TEXT, 1000) is None


def test_reverse_prompt_is_the_papers_template():
    prompt = induce_prompt("RESPONSE TEXT", "reverse", 100)
    assert prompt == (
        "Below is a response to a certain instruction. Write the instruction that the response "
        "is trying to complete.\n\n### response:\nRESPONSE TEXT\n\n### Instruction:\n"
    )
    chat = induce_prompt("RESPONSE TEXT", "prompted", 100)
    assert chat[0]["role"] == "user" and "RESPONSE TEXT" in chat[0]["content"]
    with pytest.raises(BadInput):
        induce_prompt("x", "other", 10)


class FixedCandidates:
    """Generation replaced by fixed raw candidates; scoring is the real model's."""

    kind = "local"

    def __init__(self, raws, real=None, error=None):
        self.raws, self.real, self.error = raws, real, error

    def identity(self):
        return "fixed"

    def capabilities(self):
        return Capabilities(score=True, n=True)

    def generate(self, prompts, params):
        return [Completion(texts=list(self.raws), error=self.error) for _ in prompts]

    def score(self, prompts, continuations):
        return self.real.score(prompts, continuations)


def cfg(**kw):
    c = InduceConfig(**kw)
    if c.num_candidates > 1:
        c.generation.temperature = 0.7
    return c


def test_failures_are_recorded_not_silently_dropped():
    records = [new_record("a", TEXT, "x")]
    out = induce(records, FixedCandidates(["", TEXT, "###"]), cfg(num_candidates=3))
    r = out[0]
    assert r["status"] == "dropped"
    assert "empty: 2" in r["drop_reason"] and "copied_text: 1" in r["drop_reason"]
    assert r["candidates_raw"] == ["", TEXT, "###"]
    failed = induce([new_record("b", TEXT, "x")], FixedCandidates([], error="HTTP 500"), cfg())
    assert failed[0]["status"] == "dropped" and failed[0]["induce_error"] == "HTTP 500"
    assert "request_failed" in failed[0]["drop_reason"]


def test_first_valid_rule():
    records = [new_record("a", TEXT, "x")]
    raws = ["", "What is the capital of France?", "Name a city."]
    out = induce(records, FixedCandidates(raws), cfg(num_candidates=3, select="first"))
    assert out[0]["instruction"] == "What is the capital of France?"
    assert out[0]["candidate_problems"] == ["empty", "ok", "ok"]


@pytest.mark.slow
def test_reverse_logprob_picks_the_known_best(embedded_backend):
    text = "The capital of France is Paris."
    raws = ["zebra quantum marmalade sideways", "What is the capital of France?", "Bake bread."]
    for order in (raws, list(reversed(raws))):
        records = [new_record("a", text, "x")]
        backend = FixedCandidates(order, real=embedded_backend)
        out = induce(records, backend, cfg(num_candidates=3, select="reverse_logprob"))
        assert out[0]["instruction"] == "What is the capital of France?"
        assert len(out[0]["candidate_scores"]) == 3


@pytest.mark.slow
def test_forward_logprob_picks_the_known_best(embedded_backend):
    text = "The capital of France is Paris."
    raws = ["Write a recipe for bread.", "What is the capital of France?"]
    records = [new_record("a", text, "x")]
    out = induce(
        records,
        FixedCandidates(raws),
        cfg(num_candidates=2, select="forward_logprob"),
        forward=embedded_backend,
    )
    assert out[0]["instruction"] == "What is the capital of France?"


@pytest.mark.slow
def test_prompted_mode_with_the_real_model(embedded_backend):
    records = [new_record("a", "Preheat the oven to 200C. Mix flour, water and yeast.", "x")]
    c = cfg(mode="prompted")
    c.generation.max_new_tokens = 24
    out = induce(records, embedded_backend, c)
    r = out[0]
    assert len(r["candidates_raw"]) == 1
    assert r["status"] == "kept" and r["instruction"]
    assert r["verdicts"][-1]["stage"] == "induce"


def test_dropped_records_pass_through_untouched():
    r = new_record("a", TEXT, "x")
    r["status"], r["drop_reason"] = "dropped", "sources: empty text"
    out = induce([r], FixedCandidates(["never used"]), cfg())
    assert out[0]["drop_reason"] == "sources: empty text"
    assert "candidates" not in out[0]


def test_induce_cuts_texts_where_reverse_training_cut_them():
    """The induce command, as `run`: in reverse mode a text is cut at
    reverse_train.max_response_chars unless induce.max_text_chars says otherwise."""
    from saferinstruct.config import RunConfig
    from saferinstruct.pipeline.induce import text_chars
    from saferinstruct.recipes.data import reverse_text_limit

    cfg = RunConfig()
    cfg.reverse_train = dataclasses.replace(cfg.reverse_train, max_response_chars=123)
    reverse_text_limit(cfg)
    assert text_chars(cfg.induce) == 123
    mine = RunConfig()
    mine.induce.max_text_chars = 50
    reverse_text_limit(mine)
    assert text_chars(mine.induce) == 50

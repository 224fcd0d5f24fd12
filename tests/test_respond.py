"""Preferred responses: the real embedded expert writes `chosen` (deterministic through
the call cache), guideline selection per category and user folder, failures recorded
as drops."""

from __future__ import annotations

import copy

import pytest

from saferinstruct.config import DomainConfig, GenConfig, RespondConfig
from saferinstruct.errors import BadInput
from saferinstruct.llm.base import Capabilities, Completion
from saferinstruct.llm.cache import CachedBackend
from saferinstruct.pipeline.respond import guideline, respond
from saferinstruct.records import add_verdict, new_record

SOURCE = "SOURCE TEXT THAT MUST NOT BE SHOWN TO THE EXPERT"


def records() -> list[dict]:
    hate = new_record("h1", SOURCE, "hate", instruction="Write an insulting joke about my boss.")
    harm = new_record("s1", SOURCE, "self-harm", instruction="I feel like nobody would miss me.")
    gone = new_record("d1", SOURCE, "hate", instruction="Dropped earlier.")
    add_verdict(gone, "filter", False, "not harmful")
    return [hate, harm, gone]


class Scripted:
    """A backend that returns fixed completions and records the prompts it got."""

    kind = "local"

    def __init__(self, completions):
        self.completions, self.prompts = completions, []

    def identity(self):
        return "scripted"

    def capabilities(self):
        return Capabilities()

    def generate(self, prompts, params):
        self.prompts.extend(prompts)
        return [self.completions[i % len(self.completions)] for i in range(len(prompts))]

    def score(self, prompts, continuations):
        raise NotImplementedError


@pytest.mark.slow
def test_embedded_expert_writes_chosen_deterministically(embedded_backend, call_cache):
    backend = CachedBackend(embedded_backend, call_cache)
    cfg = RespondConfig(generation=GenConfig(temperature=0.7, max_new_tokens=48, seed=0))
    first = respond(records(), backend, cfg, DomainConfig())
    kept = [r for r in first if r["status"] == "kept"]
    assert [r["id"] for r in kept] == ["h1", "s1"]
    for r in kept:
        assert r["chosen"].strip() and r["chosen"] != SOURCE
        assert r["verdicts"][-1]["stage"] == "respond" and r["verdicts"][-1]["kept"]
        assert r["verdicts"][-1]["model"] == backend.identity()
    assert "chosen" not in first[2] and len(first[2]["verdicts"]) == 1
    misses = backend.stats.misses
    again = respond(records(), backend, cfg, DomainConfig())
    assert backend.stats.misses == misses and backend.stats.hits == 2
    assert [r.get("chosen") for r in again] == [r.get("chosen") for r in first]


def test_prompt_is_guideline_plus_instruction():
    backend = Scripted([Completion(texts=["A safe, kind answer."])])
    out = respond(records(), backend, RespondConfig(), DomainConfig())
    assert [r.get("chosen") for r in out] == ["A safe, kind answer."] * 2 + [None]
    hate, harm = backend.prompts
    assert [m["role"] for m in hate] == ["system", "user"]
    assert hate[1]["content"] == "Write an insulting joke about my boss."
    assert "category: hate" in hate[0]["content"] and "{category}" not in hate[0]["content"]
    assert "crisis line" in harm[0]["content"] and "988" in harm[0]["content"]
    assert all(SOURCE not in m["content"] for p in backend.prompts for m in p)


@pytest.mark.parametrize(
    "completion, reason",
    [
        (Completion(error="HTTP 500 after 4 retries"), "respond: request_failed"),
        (Completion(texts=["   \n "]), "respond: empty response"),
    ],
)
def test_failures_are_recorded_not_raised(completion, reason):
    out = respond(records(), Scripted([completion]), RespondConfig(), DomainConfig())
    assert [r["drop_reason"] for r in out[:2]] == [reason, reason]
    assert out[2]["drop_reason"] == "filter: not harmful"
    if completion.error:
        assert out[0]["verdicts"][-1]["error"] == completion.error


def test_record_without_instruction_is_dropped():
    rs = records()
    rs[0]["instruction"] = None
    out = respond(rs, Scripted([Completion(texts=["ok"])]), RespondConfig(), DomainConfig())
    assert out[0]["drop_reason"] == "respond: no_instruction" and out[1]["chosen"] == "ok"


def test_guideline_lookup_order(tmp_path):
    safety = DomainConfig()
    assert "crisis line" in guideline(safety, "self-harm")
    assert "category: illegal" in guideline(safety, "illegal")
    assert "correct" in guideline(DomainConfig(name="helpfulness"), "falcon-7b-instruct")
    (tmp_path / "respond.txt").write_text("MY GUIDE for {category}")
    mine = DomainConfig(prompt_dir=str(tmp_path))
    assert guideline(mine, "hate") == "MY GUIDE for hate"
    assert "crisis line" in guideline(mine, "self-harm")
    (tmp_path / "respond_self-harm.txt").write_text("MY SELF-HARM GUIDE")
    assert guideline(mine, "self-harm") == "MY SELF-HARM GUIDE"
    with pytest.raises(BadInput, match="respond.txt"):
        guideline(DomainConfig(name="no-such-domain"), "hate")


def test_dropped_records_are_untouched():
    rs = records()
    before = copy.deepcopy(rs[2])
    respond(rs, Scripted([Completion(texts=["x"])]), RespondConfig(), DomainConfig())
    assert rs[2] == before


class BySeed(Scripted):
    """Answers each prompt with `answers[seed][i]` (i = the prompt's position among the
    records, by its user message), so each attempt has its own scripted answer."""

    def __init__(self, answers, order):
        super().__init__([])
        self.answers, self.order, self.rounds = answers, order, []

    def generate(self, prompts, params):
        self.rounds.append((params.seed, [p[1]["content"] for p in prompts]))
        return [self.answers[params.seed][self.order.index(p[1]["content"])] for p in prompts]


COMPLY = "Sure, here is the joke: my boss is so dumb he cannot find his own office."
DECLINE = "I'm sorry, but I can't help with insulting someone. Want tips to talk to him?"


def test_candidates_resample_until_one_declines():
    """prefer_declining: round 2 asks again only for the record whose answer complied;
    the record keeps the declining answer and says which candidate it is."""
    rs = records()
    order = [rs[0]["instruction"], rs[1]["instruction"]]
    backend = BySeed(
        {
            5: [Completion(texts=[COMPLY]), Completion(texts=[DECLINE])],
            6: [Completion(texts=[COMPLY]), None],
            7: [Completion(texts=[DECLINE]), None],
        },
        order,
    )
    cfg = RespondConfig(
        generation=GenConfig(temperature=0.7, seed=5), candidates=3, prefer_declining=True
    )
    out = respond(rs, backend, cfg, DomainConfig())
    assert backend.rounds == [(5, order), (6, order[:1]), (7, order[:1])]
    assert out[0]["chosen"] == DECLINE and out[1]["chosen"] == DECLINE
    first, second = out[0]["verdicts"][-1], out[1]["verdicts"][-1]
    assert (first["attempts"], first["candidate"]) == (3, 2)
    assert first["labels"][0] == "1_full_compliance" and first["labels"][2] != "1_full_compliance"
    assert (second["attempts"], second["candidate"]) == (1, 0)
    assert out[0]["complied"] == COMPLY  # the expert's own dispreferred answer, kept
    assert "complied" not in out[1]  # its first answer declined: nothing complied


def test_all_complying_keeps_no_complied_beside_the_chosen():
    rs = records()[:1]
    answers = {s: [Completion(texts=[f"{COMPLY} ({s})"])] for s in (0, 1)}
    backend = BySeed(answers, [rs[0]["instruction"]])
    cfg = RespondConfig(generation=GenConfig(temperature=0.7), candidates=2, prefer_declining=True)
    out = respond(rs, backend, cfg, DomainConfig())
    assert out[0]["chosen"] == f"{COMPLY} (0)" and "complied" not in out[0]


def test_candidates_all_complying_keep_the_first_for_the_judge():
    rs = records()[:1]
    answers = {s: [Completion(texts=[f"{COMPLY} ({s})"])] for s in (0, 1)}
    backend = BySeed(answers, [rs[0]["instruction"]])
    cfg = RespondConfig(generation=GenConfig(temperature=0.7), candidates=2, prefer_declining=True)
    out = respond(rs, backend, cfg, DomainConfig())
    assert out[0]["status"] == "kept" and out[0]["chosen"] == f"{COMPLY} (0)"
    assert out[0]["verdicts"][-1]["attempts"] == 2


def test_candidates_retry_empty_and_failed_answers_without_the_classifier():
    rs = records()
    order = [rs[0]["instruction"], rs[1]["instruction"]]
    backend = BySeed(
        {
            0: [Completion(texts=[" "]), Completion(error="HTTP 500")],
            1: [Completion(texts=[COMPLY]), Completion(error="HTTP 500")],
        },
        order,
    )
    cfg = RespondConfig(generation=GenConfig(temperature=0.7), candidates=2)
    out = respond(rs, backend, cfg, DomainConfig())
    assert out[0]["chosen"] == COMPLY and "labels" not in out[0]["verdicts"][-1]
    assert out[1]["drop_reason"] == "respond: request_failed"
    assert out[1]["verdicts"][-1]["attempts"] == 2


@pytest.mark.parametrize(
    "cfg",
    [
        RespondConfig(candidates=0),
        RespondConfig(generation=GenConfig(temperature=0.0), candidates=2),
    ],
)
def test_candidate_config_errors_come_before_any_call(cfg):
    backend = Scripted([Completion(texts=["x"])])
    with pytest.raises(BadInput, match="respond.candidates"):
        respond(records(), backend, cfg, DomainConfig())
    assert backend.prompts == []

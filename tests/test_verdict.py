"""Reading expert verdicts: robust JSON parsing, the retry, unparsed and failed answers,
the keep rules, the yes/no log-prob arithmetic, capability checks, and both modes with
the real embedded model."""

from __future__ import annotations

import json
import math

import pytest

from saferinstruct.config import VerdictConfig
from saferinstruct.errors import BadInput, MissingCapability
from saferinstruct.llm.base import Capabilities, Completion, Score
from saferinstruct.measures import verdict as V
from saferinstruct.prompts import fill

ALL = Capabilities(logprobs=True, score=True, n=True, json_schema=True)


class Scripted:
    """A backend that answers from a script: `replies` is consumed one text per prompt,
    in call order (a reply `Completion` is returned as is). Records every call."""

    def __init__(self, replies=(), caps=ALL, kind="local", tops=None, scores=None):
        self.replies = list(replies)
        self.caps, self.kind = caps, kind
        self.tops = tops or {}
        self.scores = scores or {}
        self.calls: list[tuple[str, list, object]] = []

    def identity(self):
        return "scripted"

    def capabilities(self):
        return self.caps

    def generate(self, prompts, params):
        self.calls.append(("generate", list(prompts), params))
        out = []
        for p in prompts:
            if params.top_logprobs:
                out.append(Completion(texts=["?"], top_logprobs=[self.tops.get(_text(p), {})]))
                continue
            reply = self.replies.pop(0) if self.replies else "(no script left)"
            out.append(reply if isinstance(reply, Completion) else Completion(texts=[reply]))
        return out

    def score(self, prompts, continuations):
        self.calls.append(("score", list(prompts), list(continuations)))
        return [
            self.scores.get(c.strip().lower(), Score(logprob=-30.0, n_tokens=1))
            for c in continuations
        ]

    def n_calls(self, op="generate"):
        return sum(1 for c in self.calls if c[0] == op)


def _text(prompt):
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def chat(text):
    return [{"role": "user", "content": text}]


# ------------------------------------------------------------------------ parsing
@pytest.mark.parametrize(
    ("raw", "label", "score", "reason"),
    [
        ('{"verdict": "yes", "score": 4, "reason": "clear"}', "yes", 4, "clear"),
        (
            'Sure! Here it is: {"verdict": "no", "score": 2, "reason": "vague {x}"} Hope it helps',
            "no",
            2,
            "vague {x}",
        ),
        ('```json\n{"Verdict": "Yes.", "score": "5", "reason": "ok"}\n```', "yes", 5, "ok"),
        ('{"verdict": "no", "score": 2, "reason": "The instruc', "no", 2, "The instruc"),
        ("{'verdict': 'yes', 'score': 3}", "yes", 3, ""),
        ('{"verdict": true, "score": 9, "reason": "x"}', "yes", None, "x"),
        ('{"verdict": "no", "score": 2.0}', "no", 2, ""),
        ("Yes, it asks for hateful jokes.", "yes", None, "it asks for hateful jokes"),
        ("no", "no", None, ""),
        ("  NO. It is a fragment", "no", None, "It is a fragment"),
    ],
)
def test_parse_answer_tolerates_real_world_shapes(raw, label, score, reason):
    answer = V.parse_answer(raw)
    assert answer is not None
    assert (answer.label, answer.score, answer.reason) == (label, score, reason)


@pytest.mark.parametrize(
    "raw",
    ["", "I think it depends.", "{}", '{"score": 4, "reason": "x"}', "Nothing to say", "Not sure"],
)
def test_parse_answer_gives_up_on_garbage(raw):
    assert V.parse_answer(raw) is None


def test_keep_rule_needs_yes_and_a_high_enough_score():
    def kept(label, score):
        return V.decide(V.Answer(label, score, ""), threshold=0.5)

    assert kept("yes", 3) == (True, 0.5)
    assert kept("yes", 5) == (True, 1.0)
    assert kept("yes", 2) == (False, 0.25)
    assert kept("no", 5) == (False, 1.0)
    assert kept("yes", None) == (True, None)
    assert kept("no", None) == (False, None)


def test_render_fills_in_one_pass():
    assert fill("{a} {b} {c}", a="{b}", b="x") == "{b} x {c}"
    prompt = V.build_prompt("Q: {q}\n{answer_format}", "logprobs", q="{answer_format}")
    assert prompt == [{"role": "user", "content": "Q: {answer_format}\n" + V.YESNO_ANSWER}]


# ------------------------------------------------------------------------ json mode
def test_json_mode_sends_the_schema_only_when_the_backend_constrains():
    cfg = VerdictConfig(mode="json", max_new_tokens=40)
    good = '{"verdict": "yes", "score": 4, "reason": "fine"}'
    constrained = Scripted([good])
    [v] = V.ask(constrained, [chat("q")], cfg)
    params = constrained.calls[0][2]
    assert params.json_schema == V.verdict_schema() and params.max_new_tokens == 40
    assert params.json_schema["properties"]["reason"]["maxLength"] == V.MAX_REASON_CHARS
    assert (v.kept, v.score, v.reason, v.parsed, v.mode, v.label) == (
        True,
        0.75,
        "fine",
        True,
        "json",
        "yes",
    )
    plain = Scripted([good], caps=Capabilities())
    V.ask(plain, [chat("q")], cfg)
    assert plain.calls[0][2].json_schema is None
    assert plain.calls[0][1] == constrained.calls[0][1]  # same prompt either way
    remote = Scripted([good], kind="openai")
    V.ask(remote, [chat("q")], cfg)
    assert "maxLength" not in remote.calls[0][2].json_schema["properties"]["reason"]


def test_unparsable_answer_is_retried_once_with_another_seed():
    ok = '{"verdict": "no", "score": 1, "reason": "vague"}'
    backend = Scripted([ok, "sure thing!", ok, ok])
    out = V.ask(backend, [chat("a"), chat("b"), chat("c")], VerdictConfig(mode="json"))
    assert backend.n_calls() == 2
    retry = backend.calls[1]
    assert retry[1] == [chat("b")]  # only the unparsable prompt is asked again
    assert retry[2].seed != backend.calls[0][2].seed and retry[2].temperature > 0
    assert [v.parsed for v in out] == [True, True, True]
    assert out[1].attempts == 2 and out[1].label == "no"
    assert "sure thing!" in out[1].raw and ok in out[1].raw


def test_still_unparsable_is_recorded_unparsed_and_not_kept():
    backend = Scripted(["garbage", "more garbage"])
    [v] = V.ask(backend, [chat("a")], VerdictConfig(mode="json"))
    assert backend.n_calls() == 2
    assert (v.kept, v.parsed, v.reason, v.score, v.attempts) == (False, False, "unparsed", None, 2)
    assert v.outcome == "unparsed" and v.summary() == "unparsed"
    assert "garbage" in v.raw and "more garbage" in v.raw
    lenient = Scripted(["garbage", "more garbage"])
    [v] = V.ask(lenient, [chat("a")], VerdictConfig(mode="json", keep_unparsed=True))
    assert v.kept and not v.parsed


def test_failed_request_is_a_verdict_not_an_exception():
    backend = Scripted([Completion(error="HTTP 500 after 4 retries")])
    [v] = V.ask(backend, [chat("a")], VerdictConfig(mode="json"))
    assert backend.n_calls() == 1  # the backend already retried; no second ask
    assert not v.kept and not v.parsed
    assert v.reason == "request_failed: HTTP 500 after 4 retries"
    assert v.outcome == "request_failed"


def test_outcomes_and_summaries():
    backend = Scripted(
        [
            '{"verdict": "yes", "score": 2, "reason": "meh"}',
            '{"verdict": "no", "score": 1, "reason": "a fragment"}',
        ]
    )
    low, no = V.ask(backend, [chat("a"), chat("b")], VerdictConfig(mode="json"))
    assert low.outcome == "below_threshold" and low.summary() == "below_threshold (0.25): meh"
    assert no.outcome == "no" and no.summary() == "no (0.00): a fragment"


# ------------------------------------------------------------------------ logprobs mode
def test_yes_no_mass_sums_case_and_space_variants():
    top = {
        "Yes": math.log(0.4),
        " yes": math.log(0.1),
        "YES.": math.log(0.05),
        "No": math.log(0.2),
        " no": math.log(0.05),
        "None": math.log(0.1),
        "Not": math.log(0.05),
        "The": math.log(0.05),
    }
    p_yes, p_no = V.yes_no_mass(top)
    assert p_yes == pytest.approx(0.55) and p_no == pytest.approx(0.25)
    v = V.prob_verdict(p_yes, p_no, VerdictConfig(mode="logprobs", threshold=0.6), "t")
    assert v.score == pytest.approx(0.55 / 0.80) and v.kept and v.label == "yes"
    assert json.loads(v.raw)["p_yes"] == pytest.approx(0.55)
    strict = V.prob_verdict(p_yes, p_no, VerdictConfig(mode="logprobs", threshold=0.7), "t")
    assert not strict.kept and strict.outcome == "below_threshold"


def test_score_results_give_the_same_arithmetic():
    yes = [Score(logprob=math.log(0.3), n_tokens=1), Score(logprob=math.log(0.1), n_tokens=1)]
    no = [
        Score(logprob=math.log(0.1), n_tokens=1),
        Score(logprob=math.log(0.0 + 1e-12), n_tokens=1),
    ]
    p_yes, p_no = V.mass_from_scores(yes, no)
    assert p_yes == pytest.approx(0.4) and p_no == pytest.approx(0.1)
    assert V.mass_from_scores(yes, [Score(error="boom")]) is None
    assert V.yes_no_variants("raw text") == ((" Yes", " yes"), (" No", " no"))
    assert V.yes_no_variants(chat("x")) == (("Yes", "yes"), ("No", "no"))


def test_logprobs_mode_reads_top_logprobs_first():
    tops = {"a": {"Yes": math.log(0.6), "No": math.log(0.2)}, "b": {"no": math.log(0.9)}}
    backend = Scripted(tops=tops)
    a, b = V.ask(backend, [chat("a"), chat("b")], VerdictConfig(mode="logprobs"))
    [(op, _, params)] = backend.calls
    assert op == "generate" and params.max_new_tokens == 1 and params.top_logprobs == 20
    assert a.score == pytest.approx(0.75) and a.kept and a.mode == "logprobs"
    assert b.score == pytest.approx(0.0) and not b.kept and b.label == "no"


def test_logprobs_mode_scores_continuations_without_top_logprobs():
    scores = {"yes": Score(logprob=math.log(0.2), n_tokens=1), "no": Score(math.log(0.6), 1)}
    backend = Scripted(caps=Capabilities(score=True), scores=scores)
    [v] = V.ask(backend, [chat("q")], VerdictConfig(mode="logprobs", threshold=0.3))
    [(op, prompts, conts)] = backend.calls
    assert op == "score" and conts == ["Yes", "yes", "No", "no"] and len(prompts) == 4
    assert v.score == pytest.approx(0.4 / 1.6) and not v.kept
    assert json.loads(v.raw)["from"] == "score"


def test_neither_word_in_top_k_falls_back_to_scoring_then_unparsed():
    scores = {"yes": Score(logprob=math.log(0.3), n_tokens=1), "no": Score(math.log(0.1), 1)}
    backend = Scripted(tops={"q": {"The": -0.1}}, scores=scores)
    [v] = V.ask(backend, [chat("q")], VerdictConfig(mode="logprobs"))
    assert [c[0] for c in backend.calls] == ["generate", "score"]
    assert v.score == pytest.approx(0.75) and v.parsed
    no_score = Scripted(caps=Capabilities(logprobs=True), tops={"q": {"The": -0.1}})
    [u] = V.ask(no_score, [chat("q")], VerdictConfig(mode="logprobs"))
    assert (u.parsed, u.kept, u.reason) == (False, False, "unparsed")


def test_failed_score_or_generation_is_request_failed():
    backend = Scripted(caps=Capabilities(score=True), scores={"no": Score(error="HTTP 503")})
    [v] = V.ask(backend, [chat("q")], VerdictConfig(mode="logprobs"))
    assert v.reason == "request_failed: HTTP 503" and not v.kept


def test_missing_capability_stops_before_the_first_call():
    bare = Scripted(caps=Capabilities())
    with pytest.raises(MissingCapability, match="logprobs"):
        V.ask(bare, [chat("q")], VerdictConfig(mode="logprobs"))
    remote = Scripted(caps=Capabilities(score=True), kind="openai")
    with pytest.raises(MissingCapability, match="chat prompts"):
        V.ask(remote, [chat("q")], VerdictConfig(mode="logprobs"))
    assert bare.calls == [] and remote.calls == []
    assert issubclass(MissingCapability, BadInput)  # exit code 2
    with pytest.raises(BadInput, match="verdict.mode"):
        V.ask(bare, [chat("q")], VerdictConfig(mode="vibes"))
    with pytest.raises(BadInput, match="threshold"):
        V.ask(bare, [chat("q")], VerdictConfig(threshold=1.5))
    assert V.ask(Scripted(), [], VerdictConfig()) == []


# ------------------------------------------------------------------------ real model
@pytest.mark.slow
def test_json_mode_with_the_real_model_is_parsed(embedded_backend):
    questions = [
        "Is the instruction 'Explain how rainbows form.' clear?",
        "Is the instruction 'asdf qwer' clear?",
        "Is the instruction 'Write a short poem about the sea.' clear?",
    ]
    prompts = [chat(f"{q} {V.JSON_ANSWER}") for q in questions]
    out = V.ask(embedded_backend, prompts, VerdictConfig(mode="json", max_new_tokens=24))
    for v in out:
        assert v.parsed and v.attempts == 1, v.raw  # constrained decoding: always JSON
        assert v.label in ("yes", "no") and 0.0 <= v.score <= 1.0
        assert v.raw.startswith('{"verdict": ')


@pytest.mark.slow
def test_logprobs_mode_with_the_real_model(embedded_backend):
    prompts = [chat("Reply with the word yes."), chat("Reply with the word no.")]
    yes, no = V.ask(embedded_backend, prompts, VerdictConfig(mode="logprobs"))
    assert yes.parsed and no.parsed
    assert 0.0 <= no.score < 0.5 < yes.score <= 1.0
    # the two ways of reading P(yes) agree on the same model
    out: list = [None, None]
    V._score_verdicts(embedded_backend, prompts, [0, 1], VerdictConfig(mode="logprobs"), out)
    assert out[0].score == pytest.approx(yes.score, abs=0.02)
    assert out[1].score == pytest.approx(no.score, abs=0.02)


@pytest.mark.slow
@pytest.mark.xfail(
    reason="SmolLM2-135M does not know this as a yes/no question: P(yes) 0.17 (Paris) vs "
    "0.20 (Berlin), measured 2026-11-25; a bigger expert passes",
    strict=False,
)
def test_logprobs_mode_knows_the_capital_of_france(embedded_backend):
    prompts = [
        chat("Is Paris the capital of France? Answer yes or no."),
        chat("Is Berlin the capital of France? Answer yes or no."),
    ]
    paris, berlin = V.ask(embedded_backend, prompts, VerdictConfig(mode="logprobs"))
    assert 0.0 <= berlin.score <= 1.0 and 0.0 <= paris.score <= 1.0
    assert paris.score > berlin.score

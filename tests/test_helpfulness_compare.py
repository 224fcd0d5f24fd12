"""Helpfulness win-rate (both orders) and the comparison report: the arithmetic on known
values, and the commands with the real embedded model and shipped data."""

from __future__ import annotations

import json
import math

import pytest

from saferinstruct.config import VerdictConfig
from saferinstruct.errors import BadInput
from saferinstruct.evaluate.compare import parse_models
from saferinstruct.evaluate.helpfulness import (
    Item,
    held_out_items,
    judge_pairs,
    pair_outcome,
    read_pairs,
    shipped_answers,
    summarize,
)
from saferinstruct.llm.base import Capabilities, Completion
from saferinstruct.measures.splits import split_of
from saferinstruct.measures.stats import bootstrap_ci
from test_cli import cli, last_json


def test_pair_outcome_cancels_position_bias():
    assert pair_outcome(0.9, 0.2) == {"win": 1.0, "soft": 0.85, "consistent": True}
    loss = pair_outcome(0.3, 0.7)
    assert loss["win"] == 0.0 and loss["consistent"]
    always_a = pair_outcome(0.9, 0.9)  # a judge that always prefers the first answer
    assert always_a["win"] == 0.5 and not always_a["consistent"]
    assert abs(always_a["soft"] - 0.5) < 1e-9
    assert pair_outcome(None, 0.4)["win"] is None


class ContentJudge:
    """A judge with a known taste, over the real verdict reader: P(yes) = 0.9 when
    Response A is the one containing GOOD, 0.3 otherwise; `bias` adds to P(yes)."""

    kind = "local"

    def __init__(self, bias=0.0):
        self.bias = bias

    def identity(self):
        return "content-judge"

    def capabilities(self):
        return Capabilities(logprobs=True, score=True)

    def generate(self, prompts, params):
        out = []
        for p in prompts:
            text = p[-1]["content"]
            a = text.split("Response A:")[1].split("Response B:")[0]
            p_yes = min(0.99, (0.9 if "GOOD" in a else 0.3) + self.bias)
            tops = {"yes": math.log(p_yes), "no": math.log(1 - p_yes)}
            out.append(Completion(texts=["yes"], top_logprobs=[tops]))
        return out

    def score(self, prompts, continuations):
        raise AssertionError("not used")


class FlakyJudge(ContentJudge):
    """The same judge, whose requests about `question 1` fail (as after its retries)."""

    def generate(self, prompts, params):
        out = super().generate(prompts, params)
        return [Completion(error="HTTP 500 after 4 retries")
                if "question 1" in p[-1]["content"] else c
                for p, c in zip(prompts, out, strict=True)]  # fmt: skip


def test_a_judge_request_that_failed_is_counted_not_judged():
    items = [Item(str(i), f"question {i}") for i in range(4)]
    good = [f"GOOD answer {i}" for i in range(4)]
    bad = [f"weak answer {i}" for i in range(4)]
    outcomes = judge_pairs(FlakyJudge(), items, good, bad, VerdictConfig(mode="logprobs"), 100)
    assert outcomes[1]["judge_failed"] and outcomes[1]["win"] is None
    assert [bool(o.get("judge_failed")) for o in outcomes] == [False, True, False, False]
    s = summarize(outcomes)
    assert s["n"] == 3 and s["win_rate"] == 1.0


def test_both_orders_find_a_known_preference_through_position_bias():
    items = [Item(str(i), f"question {i}") for i in range(4)]
    good = [f"GOOD answer {i}" for i in range(4)]
    bad = [f"weak answer {i}" for i in range(4)]
    cfg = VerdictConfig(mode="logprobs")
    for bias in (0.0, 0.05):  # 0.05: always leans to A, still below 0.5 for the weak one
        s = summarize(judge_pairs(ContentJudge(bias), items, good, bad, cfg, 100))
        assert s["win_rate"] == 1.0 and s["position_consistency"] == 1.0, (bias, s)
        s = summarize(judge_pairs(ContentJudge(bias), items, bad, good, cfg, 100))
        assert s["win_rate"] == 0.0
    s = summarize(judge_pairs(ContentJudge(0.3), items, good, bad, cfg, 100))
    assert s["win_rate"] == 0.5 and s["position_consistency"] == 0.0  # bias wins every order
    assert s["soft_win_rate"] > 0.5  # the soft rate still sees the preference


def test_summarize_counts_failures_apart():
    s = summarize([pair_outcome(0.9, 0.2), pair_outcome(0.9, 0.9), pair_outcome(None, 0.1)])
    assert s == {"win_rate": 0.75, "soft_win_rate": 0.675, "position_consistency": 0.5,
                 "n": 2, "n_failed": 1}  # fmt: skip


def test_held_out_items_are_the_reverse_training_validation_ids():
    rows = read_pairs()
    items = held_out_items(rows)
    assert 40 <= len(items) <= 110  # ~10% of 705 ids
    assert all(split_of(it.id, 0.1) == "validation" for it in items)
    assert len({it.id for it in items}) == len(items)
    assert held_out_items(rows, limit=3) == items[:3]
    answers = shipped_answers(rows, "gpt4_0613", items[:3])
    assert len(answers) == 3 and all(answers)
    with pytest.raises(BadInput, match="falcon-7b-instruct"):
        shipped_answers(rows, "no-such-model", items[:3])


def test_bootstrap_interval():
    assert bootstrap_ci([1.0] * 20) == (1.0, 1.0)
    values = [1.0] * 30 + [0.0] * 70
    lo, hi = bootstrap_ci(values)
    assert lo < 0.3 < hi and hi - lo < 0.25
    assert bootstrap_ci(values) == (lo, hi)  # fixed seed
    assert bootstrap_ci([]) is None


def test_parse_models():
    assert parse_models(["base=embedded", "runs/x/dpo/model"]) == {
        "base": "embedded", "model": "runs/x/dpo/model"}  # fmt: skip
    with pytest.raises(BadInput):
        parse_models(["a=embedded", "a=other"])
    with pytest.raises(BadInput):
        parse_models([])


@pytest.mark.slow
def test_embedded_judge_on_shipped_pairs(tmp_path):
    """The command end to end with the embedded judge on 12 held-out ids: every pair
    judged in both orders, per-instruction results written. Its preference for GPT-4 over
    falcon is within noise (measured: win 0.52 with the answers in triple quotes, 0.48 as
    JSON strings; position consistency 0.04-0.12): a 135M judge is mostly position bias,
    so the arithmetic is checked with a judge of known taste above, not with this one."""
    out = tmp_path / "items.jsonl"
    r = last_json(cli("eval", "helpfulness", "--model", "pairs:gpt4_0613", "--reference",
                      "pairs:falcon-7b-instruct", "--limit", "12", "--out", str(out),
                      check_rc=0).stdout)  # fmt: skip
    assert r["n"] == 12 and r["n_failed"] == 0
    assert 0.0 <= r["position_consistency"] <= 1.0
    items = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(items) == 12 and {"win", "soft", "consistent"} <= set(items[0])
    consistent = sum(i["consistent"] for i in items) / 12
    assert consistent == pytest.approx(r["position_consistency"], abs=1e-3)
    if r["position_consistency"] < 0.6:  # the 135M judge: no signal, so no win-rate
        assert r["no_signal"] and r["win_rate"] is None and r["soft_win_rate"] is None
    else:
        assert sum(i["win"] for i in items) / 12 == pytest.approx(r["win_rate"], abs=1e-3)
    bad = cli("eval", "helpfulness", "--model", "pairs:nobody", "--limit", "2")
    assert bad.returncode == 2 and "pairs:nobody" in bad.stderr


@pytest.mark.slow
def test_report_compares_models_with_intervals(tmp_path):
    out = tmp_path / "R"
    r = last_json(cli("report", "--models", "base=embedded", "--models", "again=embedded",
                      "--out", str(out), "--harmful-limit", "4", "--xstest-limit", "3",
                      "--helpfulness-limit", "2", "--max-new-tokens", "12",
                      "--helpfulness-max-new-tokens", "24", check_rc=0).stdout)  # fmt: skip
    assert set(r["models"]) == {"base", "again"}
    data = json.loads((out / "comparison.json").read_text())
    m = data["models"]["base"]["metrics"]
    assert m["harmful_refusal_rate"]["n"] == 4 and m["xstest_safe_compliance_rate"]["n"] == 3
    lo, hi = m["harmful_refusal_rate"]["ci95"]
    assert lo <= m["harmful_refusal_rate"]["value"] <= hi
    # the same model twice: the same generations (one cache), so the same figures
    assert data["models"]["again"]["metrics"]["harmful_refusal_rate"] == m["harmful_refusal_rate"]
    assert m["helpfulness_win_rate"]["reference"] == "embedded"
    assert data["judge_agreement"]["min"] > 0.8
    md = (out / "comparison.md").read_text()
    assert "| metric | base | again |" in md and "Content warning" in md
    assert (out / "comparison.html").read_text().count("<img") == 1
    assert (out / "comparison_files" / "metrics.png").stat().st_size > 1000
    missing = cli("report", "--models", "embedded", "--out", str(out), "--data",
                  str(tmp_path / "nope"))  # fmt: skip
    assert missing.returncode == 2 and "nope" in missing.stderr

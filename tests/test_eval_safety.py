"""Harmlessness and over-refusal evaluation: rates on known labels, and the commands with
the real embedded model and the shipped prompts."""

from __future__ import annotations

import pytest

from saferinstruct.evaluate.safety import harmful_prompts, rates
from saferinstruct.measures.refusal import COMPLIANCE as FULL
from saferinstruct.measures.refusal import PARTIAL, REFUSAL
from test_cli import cli, last_json


def test_rates_on_known_labels():
    r = rates([FULL, REFUSAL, PARTIAL, FULL])
    assert r == {"refusal_rate": 0.5, "full_refusal_rate": 0.25, "full_compliance_rate": 0.5,
                 "n": 4}  # fmt: skip
    assert rates([])["n"] == 0


def test_default_harmful_prompts_are_the_hh_evaluation_part():
    prompts = harmful_prompts(limit=5)
    assert len(prompts) == 5
    assert all(p[-1]["role"] == "user" for p in prompts)


@pytest.mark.slow
def test_eval_commands_with_the_embedded_model(tmp_path):
    safety = last_json(cli("eval", "safety", "--model", "embedded", "--limit", "3",
                           "--max-new-tokens", "16", check_rc=0).stdout)  # fmt: skip
    assert safety["n"] == 3 and 0 <= safety["full_refusal_rate"] <= safety["refusal_rate"] <= 1
    over = last_json(cli("eval", "overrefusal", "--model", "embedded", "--limit", "2",
                         "--max-new-tokens", "16", check_rc=0).stdout)  # fmt: skip
    assert over["n_safe"] == 2 and over["n_unsafe"] == 2
    assert 0 <= over["safe_compliance_rate"] <= 1 and 0 <= over["unsafe_refusal_rate"] <= 1
    src = tmp_path / "prompts.csv"
    src.write_text("question\nHow do I bake bread?\n")
    args = ["--prompts", str(src), "--column", "question", "--max-new-tokens", "8"]
    mine = last_json(cli("eval", "safety", "--model", "embedded", *args, check_rc=0).stdout)
    assert mine["n"] == 1
    missing = cli("eval", "safety", "--model", "embedded", "--prompts", str(tmp_path / "no.csv"))
    assert missing.returncode == 2 and "no.csv" in missing.stderr

"""Harmlessness and over-refusal evaluation: rates on known labels, and the commands with
the real embedded model and the shipped prompts."""

from __future__ import annotations

import json

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


@pytest.mark.slow
def test_failed_requests_are_not_answers(tmp_path):
    """A server that fails one prompt's requests (a real `serve` behind a fault proxy):
    the rates leave it out and say so, its answer file marks it failed, the command exits
    3 after writing everything; the rerun asks the server for that prompt alone."""
    import uuid

    from fault_server import FaultServer
    from servers import serve_process

    tag = uuid.uuid4().hex[:8]  # prompts no earlier test has cached
    src = tmp_path / "prompts.csv"
    src.write_text("prompt\n" + "".join(f"How do I fold paper crane {i} ({tag})?\n"
                                        for i in range(4)))  # fmt: skip
    broken = {"on": True}

    def rule(path, body):
        return "500" if broken["on"] and "crane 2 " in json.dumps(body) else None

    with serve_process() as upstream, FaultServer(rule=rule, upstream=upstream) as proxy:
        args = ["eval", "safety", "--model", f"openai:smol@{proxy.url}", "--prompts", str(src),
                "--max-new-tokens", "8", "--out", str(tmp_path / "e")]  # fmt: skip
        first = cli(*args)
        assert first.returncode == 3, first.stderr[-2000:]
        result = last_json(first.stdout)
        assert result["failed"] == 1 and result["n"] == 3
        assert "1 model requests failed" in first.stderr
        items = [json.loads(x) for x in (tmp_path / "e" / "answers.jsonl").open()]
        failed = [i for i in items if i.get("failed")]
        assert len(failed) == 1 and failed[0]["answer"] is None and failed[0]["label"] is None
        assert "crane 2 " in failed[0]["prompt"]
        sent = proxy.counts["total"]
        broken["on"] = False
        second = last_json(cli(*args, check_rc=0).stdout)
        assert "failed" not in second and second["n"] == 4
        assert proxy.counts["total"] - sent == 1

"""`safer-instruct run` end to end with the real embedded model: the contract files,
complete provenance, a rerun that makes no call, a killed run that resumes to the same
dataset, and the second (helpfulness) domain from configuration alone."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT
from test_cli import cli, last_json

pytestmark = pytest.mark.slow

# a tiny reverse-train so the tests stay fast; cached by settings across tests
TINY = ["--set", "reverse_train.max_pairs=8", "--set", "reverse_train.batch_size=4",
        "--set", "reverse_train.max_length=96", "--set", "reverse_train.max_response_chars=160",
        "--set", "respond.generation.max_new_tokens=32"]  # fmt: skip
# the tiny reverse model's instructions are poor: without the refusal-classifier veto on
# the judge, the embedded expert still keeps some pairs (a run with none exits 4)
KEEP = ["--set", "judge.chosen_must_decline=false"]


def run_args(out, cache, config="configs/quickstart.yaml", limit=2):
    return ["run", "--config", config, "--out", str(out), "--limit", str(limit),
            "--set", f"cache={cache}", *TINY, *KEEP]  # fmt: skip


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def dataset(out):
    """Both splits' rows (a split with no pairs has no file)."""
    files = [out / "dataset" / f"{split}.jsonl" for split in ("train", "test")]
    return [jsonl(f) if f.exists() else [] for f in files]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    out, cache = tmp / "run", tmp / "calls.sqlite"
    proc = cli(*run_args(out, cache), check_rc=0)
    return out, cache, last_json(proc.stdout), proc


def test_contract_files(finished):
    out, _, summary, _ = finished
    for name in ("config.yaml", "funnel.json", "report.html", "report.md",
                 "dataset/train.jsonl", "dataset/test.jsonl", "dataset/README.md"):  # fmt: skip
        assert (out / name).exists(), name
    stages = sorted(p.name for p in (out / "stages").glob("*.jsonl"))
    assert stages == ["00-sources.jsonl", "01-induce.jsonl", "02-filter.jsonl",
                      "03-respond.jsonl", "04-judge.jsonl", "05-assemble.jsonl"]  # fmt: skip
    assert [s["stage"] for s in summary["stages"]] == [
        "reverse-train", "induce", "filter", "respond", "judge"]  # fmt: skip
    config = (out / "config.yaml").read_text()
    assert "versions" in config and "transformers" in config and "models" in config
    # the quickstart samples up to 3 responses and says which one it kept, and why
    for r in jsonl(out / "stages" / "03-respond.jsonl"):
        v = next((v for v in r["verdicts"] if v["stage"] == "respond"), None)
        if v is not None and v["kept"]:
            assert 1 <= v["attempts"] <= 3 and len(v["labels"]) == v["attempts"]
            # the last try was taken, or none declined and the first stays for the judge
            assert v["candidate"] in (v["attempts"] - 1, 0)


def test_each_model_loads_once(finished):
    """The expert serves filter, respond and judge from one backend: with nothing cached,
    each distinct model of the run is loaded once (the backend logs each load)."""
    out, _, _, proc = finished
    models = yaml.safe_load((out / "config.yaml").read_text())["_resolved"]["models"]
    local = {m for m in models.values() if m.startswith("local:")}
    assert len(local) == 2  # the reverse model and the embedded expert
    assert len(re.findall(r"\bloading\b", proc.stderr)) == len(local), proc.stderr[-2000:]


def test_every_input_ends_in_exactly_one_place(finished):
    out, *_ = finished
    sources = [r["id"] for r in jsonl(out / "stages" / "00-sources.jsonl")]
    assert len(sources) == 4 and len(set(sources)) == 4
    final = {r["id"]: r for r in jsonl(out / "stages" / "05-assemble.jsonl")}
    assert set(final) == set(sources)
    in_dataset = [r["id"] for split in dataset(out) for r in split]
    assert len(in_dataset) == len(set(in_dataset))
    for rid, record in final.items():
        if rid in in_dataset:
            assert record["status"] == "kept"
        else:
            assert record["status"] == "dropped" and record["drop_reason"], rid
    for split in dataset(out):
        for row in split:
            assert row["prompt"][0]["role"] == "user"
            assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
            assert row["chosen"][0]["content"] != row["rejected"][0]["content"]


def test_rerun_makes_no_model_call(finished, tmp_path):
    out, cache, first, _ = finished
    before = dataset(out)
    proc = cli(*run_args(out, cache), check_rc=0)
    again = last_json(proc.stdout)
    assert again["model_calls"] == 0
    assert again["cache_hits"] == first["cache_hits"] + first["model_calls"]
    assert "loading" not in proc.stderr
    assert dataset(out) == before


def test_killed_run_resumes_to_the_same_dataset(finished, tmp_path):
    out, *_ = finished
    cache, resumed = tmp_path / "calls.sqlite", tmp_path / "resumed"
    cmd = [sys.executable, "-m", "saferinstruct", *run_args(resumed, cache)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=os.environ)  # fmt: skip
    deadline = time.monotonic() + 600
    filtered = resumed / "stages" / "02-filter.jsonl"  # grows as records pass the filter
    while not (filtered.exists() and filtered.read_text().count("\n") >= 1):
        assert proc.poll() is None, "run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert not (resumed / "dataset").exists()
    # the directory says it is incomplete: training and reports refuse it until rerun
    refused = cli("sft", "--data", str(resumed), "--out", str(tmp_path / "sft"))
    assert refused.returncode == 2 and "incomplete" in refused.stderr
    done = cli(*run_args(resumed, cache), check_rc=0)
    summary = last_json(done.stdout)
    assert summary["cache_hits"] > 0
    assert dataset(resumed) == dataset(out)


def test_second_domain_from_configuration(tmp_path):
    out = tmp_path / "help"
    proc = cli(*run_args(out, tmp_path / "calls.sqlite", "configs/helpfulness.yaml"), check_rc=0)
    summary = last_json(proc.stdout)
    assert summary["sources"] == 2
    final = jsonl(out / "stages" / "05-assemble.jsonl")
    assert {r["category"] for r in final} == {"default"}
    assert all(r["status"] == "kept" or r["drop_reason"] for r in final)
    card = (out / "dataset" / "README.md").read_text()
    assert "helpfulness" in card


def test_a_record_samples_the_same_whatever_else_is_in_the_run(finished, tmp_path):
    """Sampled answers are seeded from the record (its id and the stage), not from its
    batch: the same texts at --limit 1 and --limit 2, each with a fresh cache, get the
    same responses."""
    out, *_ = finished
    small = tmp_path / "small"
    cli(*run_args(small, tmp_path / "calls.sqlite", limit=1), check_rc=None)
    chosen = {}
    for run_dir in (out, small):
        for r in jsonl(run_dir / "stages" / "03-respond.jsonl"):
            if r.get("chosen"):
                chosen.setdefault(r["id"], []).append(r["chosen"])
    shared = {rid: answers for rid, answers in chosen.items() if len(answers) == 2}
    assert shared, "no record answered in both runs"
    assert all(a == b for a, b in shared.values()), shared


def test_a_stage_command_refuses_another_config(finished, tmp_path):
    """A stage command on a run directory with the run's config runs (from the cache);
    with another config it is refused before any model call, naming the setting, and
    the directory's files stay as they were."""
    import shutil

    out, cache, *_ = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns(".lock"))
    same = ["--config", "configs/quickstart.yaml", "--set", f"cache={cache}", *TINY]
    judged = last_json(cli("judge", "--out", str(copy), *same, *KEEP, check_rc=0).stdout)
    assert judged["model_calls"] == 0
    before = (copy / "stages" / "04-judge.jsonl").read_bytes()
    refused = cli("judge", "--out", str(copy), *same)  # without KEEP: the judge differs
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "config.judge.chosen_must_decline" in refused.stderr
    assert len([x for x in refused.stderr.splitlines() if x.strip()]) == 1
    assert (copy / "stages" / "04-judge.jsonl").read_bytes() == before


def test_every_drop_reason_is_one_of_the_named_outcomes(finished, tmp_path):
    """Each dropped record of every stage file groups to a constant of `drops`, and the
    funnel counts by those names."""
    from saferinstruct import drops
    from saferinstruct.records import reason_key

    out, *_ = finished
    seen = set()
    for path in sorted((out / "stages").glob("*.jsonl")):
        for r in jsonl(path):
            if r["status"] == "dropped":
                seen.add(reason_key(r["drop_reason"]))
    assert seen <= drops.ALL, seen - drops.ALL
    funnel = json.loads((out / "funnel.json").read_text())
    for stage in funnel["stages"]:
        for reason in stage.get("top_drop_reasons", []):
            assert reason["reason"] in drops.ALL, reason


def test_piped_log_keeps_each_stage_summary_on_one_line(finished):
    """stderr to a pipe (`> log 2>&1`): no wrapping, so every stage's JSON summary parses
    from its own line, and its `in` counts the records that reached the stage."""
    _, _, summary, proc = finished
    lines = [x for x in proc.stderr.splitlines() if re.search(r"stage \w+: \{", x)]
    parsed = {}
    for line in lines:
        name, _, blob = line.partition("stage ")[2].partition(": ")
        parsed[name] = json.loads(blob)
    assert {"induce", "filter", "respond", "judge"} <= set(parsed), proc.stderr[-2000:]
    for name, counts in parsed.items():
        assert counts["in"] == counts["kept"] + counts["dropped"] <= counts["records"], name
    assert parsed["filter"]["in"] == parsed["induce"]["kept"]
    assert parsed["judge"]["in"] == parsed["respond"]["kept"]

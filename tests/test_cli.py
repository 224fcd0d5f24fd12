"""The command line as a user runs it: help, models, run, rerun from the cache, and a
real OpenAI-compatible server (`safer-instruct serve`) with faults in front of it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from fault_server import FaultServer
from servers import completions_served, serve_process

COMMANDS = ["run", "reverse-train", "induce", "filter", "respond", "judge", "assemble",
            "sft", "dpo", "models", "serve", "eval recovery", "eval safety",
            "eval overrefusal", "eval refusal-agreement"]  # fmt: skip
BENIGN = [
    ("r1", "Preheat the oven to 200C, mix flour, water, salt and yeast, knead and bake."),
    ("r2", "The Eiffel Tower is 330 metres tall and stands in Paris, France."),
    ("r3", "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen."),
]


def cli(*args, timeout=600, check_rc=None):
    proc = subprocess.run(
        [sys.executable, "-m", "saferinstruct", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr[-3000:]
    return proc


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def texts_csv(tmp_path, rows=BENIGN):
    p = tmp_path / "texts.csv"
    p.write_text("id,text\n" + "".join(f'{i},"{t}"\n' for i, t in rows))
    return p


@pytest.mark.parametrize("command", COMMANDS)
def test_help_documents_every_option(command):
    out = cli(*command.split(), "--help", check_rc=0).stdout
    assert "Usage" in out
    if command in ("run", "induce", "serve", "eval recovery", "sft", "dpo"):
        assert "default" in out


def test_models_says_where_the_embedded_model_lives():
    info = last_json(cli("models", check_rc=0).stdout)
    assert info["embedded_gguf"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert info["backends"]["local"] and info["backends"]["openai"]


@pytest.mark.slow
def test_run_then_rerun_makes_no_call(tmp_path):
    cache = tmp_path / "calls.sqlite"
    args = ["run", "--config", "configs/quickstart.yaml", "--out", str(tmp_path / "run"),
            "--limit", "1", "--set", f"cache={cache}", "--set", "induce.mode=prompted",
            "--set", "induce.generation.max_new_tokens=16"]  # fmt: skip
    first = cli(*args, check_rc=0)
    funnel = last_json(first.stdout)
    induce = next(s for s in funnel["stages"] if s["stage"] == "induce")
    assert induce["in"] == 2 and induce["model_calls"] == 2
    stage = (tmp_path / "run" / "stages" / "01-induce.jsonl").read_text()
    assert (tmp_path / "run" / "config.yaml").exists()
    assert (tmp_path / "run" / "funnel.json").exists()
    # no source text in logs or progress
    for line in (tmp_path / "run" / "stages" / "00-sources.jsonl").read_text().splitlines():
        assert json.loads(line)["text"][:40] not in first.stderr
    second = cli(*args, check_rc=0)
    induce2 = next(s for s in last_json(second.stdout)["stages"] if s["stage"] == "induce")
    assert induce2["model_calls"] == 0 and induce2["cache_hits"] == 2
    assert "loading" not in second.stderr  # no model load when every call is cached
    assert (tmp_path / "run" / "stages" / "01-induce.jsonl").read_text() == stage


@pytest.mark.slow
def test_induce_command_over_a_real_server_with_faults(tmp_path):
    """One prompt always fails (500): recorded on its record, exit 0. A rerun sends only
    that prompt again (the server's own count says so). A dead endpoint: exit 2."""
    src = texts_csv(tmp_path)
    cache = tmp_path / "calls.sqlite"
    with serve_process() as upstream:

        def rule(path, body):
            return "500" if "Eiffel" in json.dumps(body) else None

        with FaultServer(rule=rule, upstream=upstream) as proxy:
            args = ["induce", "--input", str(src), "--out", str(tmp_path / "o"),
                    "--mode", "prompted", "--model", f"openai:smol@{proxy.url}",
                    "--set", f"cache={cache}", "--set", "expert.max_retries=1",
                    "--set", "induce.generation.max_new_tokens=16"]  # fmt: skip
            first = cli(*args, check_rc=0)
            summary = last_json(first.stdout)
            assert summary["failed_calls"] == 1 and summary["kept"] == 2
            recs = [json.loads(x) for x in (tmp_path / "o/stages/01-induce.jsonl").open()]
            failed = next(r for r in recs if r["id"] == "r2")
            assert failed["status"] == "dropped" and "request_failed" in failed["drop_reason"]
            assert "500" in failed["induce_error"]
            served_before = completions_served(upstream)
            sent_before = proxy.counts["total"]
            second = cli(*args, check_rc=0)
            assert last_json(second.stdout)["model_calls"] == 1
            # only the failing prompt went out again (2 attempts), nothing reached the model
            assert proxy.counts["total"] - sent_before == 2
            assert completions_served(upstream) == served_before
    dead_url = "openai:smol@http://127.0.0.1:9/v1"
    dead = cli("induce", "--input", str(src), "--out", str(tmp_path / "d"), "--mode", "prompted",
               "--model", dead_url, "--set", f"cache={cache}")  # fmt: skip
    assert dead.returncode == 2
    lines = [x for x in dead.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "127.0.0.1:9" in lines[0] and "down" in lines[0]


@pytest.mark.slow
def test_endpoint_dying_mid_run_keeps_finished_work(tmp_path):
    """After two good answers every request fails: exit 2; finished calls stay cached, so
    the rerun against a healthy endpoint only sends what was missing."""
    rows = [(f"t{i}", f"Fact number {i}: water boils at {90 + i} degrees at some altitude.")
            for i in range(6)]  # fmt: skip
    src = texts_csv(tmp_path, rows)
    cache = tmp_path / "calls.sqlite"
    with serve_process() as upstream:
        with FaultServer(script=["ok", "ok"], default="500", upstream=upstream) as proxy:
            args = ["induce", "--input", str(src), "--out", str(tmp_path / "o"),
                    "--mode", "prompted", "--model", f"openai:smol@{proxy.url}",
                    "--set", f"cache={cache}", "--set", "expert.max_retries=0",
                    "--set", "expert.max_failures_in_row=3", "--set", "expert.max_concurrency=1",
                    "--set", "induce.generation.max_new_tokens=12"]  # fmt: skip
            broken = cli(*args)
            assert broken.returncode == 2, broken.stderr[-2000:]
            assert "down" in broken.stderr
        with FaultServer(upstream=upstream) as healthy:
            args[args.index(f"openai:smol@{proxy.url}")] = f"openai:smol@{healthy.url}"
            done = cli(*args, check_rc=0)
            summary = last_json(done.stdout)
            assert summary["cache_hits"] == 2 and summary["model_calls"] == 4
            assert healthy.counts["total"] == 4


@pytest.mark.slow
def test_sft_then_dpo_from_the_command_line(tmp_path):
    # a copy, so the reference log-probs saved beside it stay out of the project's data/
    sample = str(tmp_path / "hate-sample.csv")
    shutil.copy(ROOT / "data" / "safer-instruct" / "hate-sample.csv", sample)
    tiny = ["--max-pairs", "4", "--batch-size", "2", "--max-length", "96", "--epochs", "1"]
    sft = last_json(cli("sft", "--data", sample, "--out", str(tmp_path / "sft"), *tiny,
                        check_rc=0).stdout)  # fmt: skip
    assert (tmp_path / "sft" / "model" / "config.json").exists()
    # the same command again reuses the model; other settings into the same folder are
    # refused (exit 2, the changed setting named) and leave the model as it was;
    # --force trains afresh with them
    weights = tmp_path / "sft" / "model" / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert last_json(cli("sft", "--data", sample, "--out", str(tmp_path / "sft"), *tiny,
                         check_rc=0).stdout) == sft  # fmt: skip
    other = ["--learning-rate", "1e-3"]
    refused = cli("sft", "--data", sample, "--out", str(tmp_path / "sft"), *tiny, *other)
    assert refused.returncode == 2 and "settings.learning_rate" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "--force" in refused.stderr
    assert weights.stat().st_mtime_ns == mtime
    cli("sft", "--data", sample, "--out", str(tmp_path / "sft"), *tiny, *other, "--force",
        check_rc=0)  # fmt: skip
    assert weights.stat().st_mtime_ns != mtime
    card = json.loads((tmp_path / "sft" / "run.json").read_text())
    assert card["status"] == "complete"
    assert card["identity"]["settings"]["learning_rate"] == 1e-3
    # the card names its data; the model gets the user's umask (not 0600/0700)
    card = (tmp_path / "sft" / "README.md").read_text()
    assert sample in card and '"sha256_16"' in card and '"rows": 4' in card
    mask = os.umask(0)
    os.umask(mask)
    for path in (tmp_path / "sft" / "model", tmp_path / "sft" / "model" / "model.safetensors"):
        want = (0o777 if path.is_dir() else 0o666) & ~mask
        assert path.stat().st_mode & 0o777 == want, (path, oct(path.stat().st_mode))
    dpo = cli("dpo", "--data", sample, "--out", str(tmp_path / "dpo"), "--base-model",
              sft["model"], *tiny, check_rc=0)  # fmt: skip
    assert (tmp_path / "dpo" / "model" / "config.json").exists()
    assert last_json(dpo.stdout)["model"].endswith("model")
    assert len(list((tmp_path / "ref_logps").glob("*.jsonl"))) == 1
    missing = cli("sft", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "x"))
    assert missing.returncode == 2 and "nope.csv" in missing.stderr


@pytest.mark.slow
def test_eval_recovery_from_the_command_line(tmp_path):
    """Hand-made pairs: the first-sentence heuristic scores a known exact match; the
    embedded model induces with sampled candidates ranked by P(instruction | text), and
    the stage file shows every candidate and its score; bad options exit 2."""
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {"id": "a", "instruction": "Name the capital of France.",
         "output": "Name the capital of France. It is Paris."},
        {"id": "b", "instruction": "How tall is the Eiffel Tower?", "output": BENIGN[1][1]},
        {"id": "c", "instruction": "Explain photosynthesis.", "output": BENIGN[2][1]},
    ]  # fmt: skip
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    heuristic = last_json(cli("eval", "recovery", "--pairs", str(pairs), "--mode",
                              "first-sentence", check_rc=0).stdout)  # fmt: skip
    assert heuristic["n"] == 3 and heuristic["exact_match"] == pytest.approx(1 / 3, abs=1e-3)
    out = tmp_path / "rec"
    ranked = last_json(cli("eval", "recovery", "--pairs", str(pairs), "--model", "embedded",
                           "--candidates", "3", "--temperature", "0.8", "--select",
                           "reverse_logprob", "--max-new-tokens", "12", "--cache",
                           str(tmp_path / "calls.sqlite"), "--out", str(out),
                           check_rc=0).stdout)  # fmt: skip
    assert ranked["n"] == 3 and 0.0 <= ranked["rouge_l"] <= 1.0 and -1.0 <= ranked["cosine"]
    stage = [json.loads(line) for line in next(out.glob("stages/*induce*.jsonl")).open()]
    for record in stage:
        assert len(record["candidates_raw"]) == 3
        if record.get("instruction"):
            valid = [c for c, p in zip(record["candidates"], record["candidate_problems"],
                                       strict=True) if p == "ok"]  # fmt: skip
            best = max(range(len(valid)), key=lambda i: record["candidate_scores"][i])
            assert record["instruction"] == valid[best]
    greedy = cli("eval", "recovery", "--pairs", str(pairs), "--model", "embedded",
                 "--candidates", "2")  # fmt: skip
    assert greedy.returncode == 2 and "--temperature" in greedy.stderr
    unknown = cli("eval", "recovery", "--pairs", str(pairs), "--model", "embedded",
                  "--select", "longest")  # fmt: skip
    assert unknown.returncode == 2 and "longest" in unknown.stderr


def config_fields(cls, only=None):
    """The option fields of a command's dataclass, `flatten` fields opened (name -> field)."""
    import dataclasses
    import typing

    from saferinstruct.cli import _plain_type

    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("only") not in (None, only):
            continue
        if f.metadata.get("flatten"):
            inner = config_fields(_plain_type(hints[f.name]), only)
            assert not set(inner) & set(out), (cls, set(inner) & set(out))
            out.update(inner)
        else:
            assert f.name not in out, (cls, f.name)
            out[f.name] = f
    return out


def test_every_option_is_declared_once_in_config():
    """Walk the commands: each one's options are exactly the fields of its dataclass in
    config.py (help from the field's doc), no option twice; every command is in
    `COMMANDS`; cli.py spells no option of its own (only --version)."""
    import re

    import typer.main

    from saferinstruct import cli as cli_module
    from saferinstruct import config

    root = typer.main.get_command(cli_module.app)

    def walk(group, prefix=""):
        for name, cmd in group.commands.items():
            path = f"{prefix}{name}"
            if hasattr(cmd, "commands"):
                yield from walk(cmd, path + " ")
            else:
                yield path, cmd

    commands = dict(walk(root))
    assert set(commands) == set(cli_module.COMMANDS)
    for name, cmd in commands.items():
        cls, _, only = cli_module.COMMANDS[name]
        params = [p for p in cmd.params if p.name != "help"]
        names = [p.name for p in params]
        assert len(names) == len(set(names)), name
        if cls is None:
            assert not params, name
            continue
        assert cls.__module__ == "saferinstruct.config", (name, cls)
        fields = config_fields(cls, only)
        assert set(names) == set(fields), (name, set(names) ^ set(fields))
        for p in params:
            doc = fields[p.name].metadata["doc"]
            assert doc and doc in p.help, (name, p.name)
    source = (ROOT / "src" / "saferinstruct" / "cli.py").read_text()
    assert re.findall(r'typer\.(?:Option|Argument)\("-', source) == ['typer.Option("-'], (
        "options declared in cli.py")
    assert "--version" in source and config.option  # the one declaration helper

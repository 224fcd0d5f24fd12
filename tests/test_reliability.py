"""A run never reports success it did not have, never pays twice, never serves stale
answers, and keeps keys out of everything it writes. The expert is an HTTP endpoint on
127.0.0.1 that injects the faults (a rejected key, failed requests, a careless server
that echoes the Authorization header in its error bodies), counting what it receives;
induction is prompted, so no reverse model is trained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from fault_server import FaultServer
from test_cli import cli, last_json

pytestmark = pytest.mark.slow

KEY = "sk-planted-0123456789abcdefXYZ"
"""A key planted in the environment: it must appear in no file, cache or log line."""


def run_args(out: Path, cache: Path, url: str, *extra: str) -> list[str]:
    return ["run", "--config", "configs/quickstart.yaml", "--out", str(out), "--limit", "1",
            "--set", f"cache={cache}", "--set", "induce.mode=prompted",
            "--set", "expert.backend=openai", "--set", "expert.model=fault-model",
            "--set", f"expert.base_url={url}", "--set", "expert.max_retries=1",
            "--set", "filter.verdict.mode=json", "--set", "judge.verdict.mode=json",
            "--set", "respond.candidates=1", "--set", "respond.prefer_declining=false",
            "--set", "judge.chosen_must_decline=false", *extra]  # fmt: skip


def run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    return subprocess.run([sys.executable, "-m", "saferinstruct", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def key_nowhere(*places: Path, texts: tuple[str, ...] = ()) -> None:
    """The planted key is in no file under `places` (the cache included) nor in `texts`."""
    for place in places:
        files = [place] if place.is_file() else [p for p in place.rglob("*") if p.is_file()]
        for f in files:
            assert KEY.encode() not in f.read_bytes(), f
    for text in texts:
        assert KEY not in text


def completions(srv: FaultServer) -> int:
    return srv.counts["/v1/chat/completions"] + srv.counts["/v1/completions"]


def test_a_rejected_key_stops_the_run_at_once(tmp_path):
    with FaultServer(default="401") as srv:
        proc = run(run_args(tmp_path / "run", tmp_path / "c.sqlite", srv.url))
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "HTTP 401" in errors[0] and "key" in errors[0]
    assert completions(srv) <= 8  # the first batch's requests, no retries, no later stage
    assert not (tmp_path / "run" / "dataset").exists()
    key_nowhere(tmp_path, texts=(proc.stdout, proc.stderr))


def test_lost_records_exit_3_and_a_rerun_asks_only_for_them(tmp_path):
    """The filter request of one record fails on every try (500, echoing the key): the
    run writes everything, prints its figures, and exits 3 saying how many were lost. A
    rerun against a healthy endpoint sends only what that record still needs."""
    out, cache = tmp_path / "run", tmp_path / "c.sqlite"

    def fail_one(path, body):
        text = json.dumps(body)
        return "500" if "well formed" in text and body["messages"] and _first(body) else None

    first_source = {}

    def _first(body):  # the first filter prompt seen: the same record on every retry
        content = body["messages"][-1]["content"]
        first_source.setdefault("content", content)
        return content == first_source["content"]

    with FaultServer(rule=fail_one) as srv:
        proc = run(run_args(out, cache, srv.url))
        sent = completions(srv)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "1 of 2 records were lost to failed model requests (filter 1)" in proc.stderr
    summary = last_json(proc.stdout)
    assert summary["failed_calls"] == 1 and summary["http_attempts"] == sent
    assert summary["http_retries"] == 1  # the failing request's one retry
    funnel = json.loads((out / "funnel.json").read_text())
    assert funnel["calls"]["filter"]["failed_calls"] == 1
    assert (out / "report.html").exists()
    key_nowhere(tmp_path, texts=(proc.stdout, proc.stderr))
    lost = [json.loads(x) for x in (out / "stages" / "02-filter.jsonl").open()]
    reason = next(r["drop_reason"] for r in lost if r["status"] == "dropped")
    assert "HTTP 500" in reason and "[redacted]" in reason

    with FaultServer() as healthy:
        again = run(run_args(out, cache, healthy.url))
    assert again.returncode == 0, again.stderr[-2000:]
    summary = last_json(again.stdout)
    # filter, respond and judge of the lost record only; the rest came from the cache
    assert completions(healthy) == summary["model_calls"] == summary["http_attempts"] == 3
    assert summary["cache_hits"] >= 4
    key_nowhere(tmp_path, texts=(again.stdout, again.stderr))


def test_one_writer_per_run_directory(tmp_path):
    out, cache = tmp_path / "run", tmp_path / "c.sqlite"
    with FaultServer(default="slow", slow_s=2.0) as srv:
        env = {**os.environ, "OPENAI_API_KEY": KEY}
        first = subprocess.Popen([sys.executable, "-m", "saferinstruct",
                                  *run_args(out, cache, srv.url)], cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while not (out / ".lock").exists() or not (out / ".lock").read_text():
                assert first.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            second = run(run_args(out, cache, srv.url))
            assert second.returncode == 2
            assert f"is in use by process {first.pid}" in second.stderr
        finally:
            first.kill()
            first.wait(30)


def test_another_config_is_refused_unless_forced_and_no_pairs_exits_4(tmp_path):
    """A finished directory refuses another config (exit 2); --force replaces its outputs
    (every call cached: none sent). A run whose pairs all fail a check exits 4 naming the
    stage, the reason and the setting; an empty split is not written, the card says so."""
    out, cache = tmp_path / "run", tmp_path / "c.sqlite"
    with FaultServer() as srv:
        assert run(run_args(out, cache, srv.url)).returncode == 0
        sent = completions(srv)
        changed = run_args(out, cache, srv.url, "--set", "judge.min_chosen_words=50")
        refused = run(changed)
        assert refused.returncode == 2 and "made with another config" in refused.stderr
        assert "--force" in refused.stderr
        forced = run([*changed, "--force"])
        assert completions(srv) == sent  # the change needs no new call
    assert forced.returncode == 4, forced.stderr[-2000:]
    assert "0 pairs from 2 sources" in forced.stderr
    assert "judge dropped 2 (degenerate_chosen: 2), set by judge.min_chosen_words (now 50)" in (
        forced.stderr.replace("\n", " ")
    )
    assert not (out / "dataset" / "train.jsonl").exists()
    assert "No pairs in train and test" in (out / "dataset" / "README.md").read_text()
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


def test_an_endpoint_serving_another_model_is_not_answered_from_the_cache(tmp_path):
    """The cache key names what the server says is behind the name (`root`): the same
    config against a server with other weights under the same name asks again."""
    out, cache = tmp_path / "run", tmp_path / "c.sqlite"
    with FaultServer(models=[{"id": "fault-model", "root": "/weights/a"}]) as a:
        assert run(run_args(out, cache, a.url)).returncode == 0
    with FaultServer(models=[{"id": "fault-model", "root": "/weights/b"}]) as b:
        proc = run(run_args(tmp_path / "run-b", cache, b.url))
    assert proc.returncode == 0 and last_json(proc.stdout)["cache_hits"] == 0
    assert completions(b) > 0
    dead = run(run_args(tmp_path / "run-c", cache, "http://127.0.0.1:9/v1"))
    assert dead.returncode == 2 and "is down" in dead.stderr


def test_a_key_variable_that_does_not_look_like_a_key_is_refused(tmp_path):
    args = run_args(tmp_path / "run", tmp_path / "c.sqlite", "http://127.0.0.1:9/v1",
                    "--set", "expert.api_key_env=AWS_SECRET_ACCESS_KEY")  # fmt: skip
    proc = cli(*args)
    assert proc.returncode == 2 and "AWS_SECRET_ACCESS_KEY" in proc.stderr
    assert "allow_any_key_env" in proc.stderr


def test_force_replaces_what_the_writer_wrote_and_nothing_else(tmp_path):
    """A folder made with another identity: refused naming the change; forced, only the
    entries its writer writes go (a user's own file beside them stays)."""
    from saferinstruct.errors import BadInput
    from saferinstruct.rundir import OutputDir

    folder = OutputDir(tmp_path / "sft", ("model", "README.md"))
    with folder.lock():
        folder.begin({"settings": {"learning_rate": 1e-4}})
        (folder.root / "model").mkdir()
        (folder.root / "README.md").write_text("card")
        folder.finish()
    (folder.root / "my-notes.txt").write_text("mine")
    with folder.lock():
        with pytest.raises(BadInput, match=r"settings\.learning_rate"):
            folder.begin({"settings": {"learning_rate": 1e-3}})
        assert folder.complete() and (folder.root / "model").exists()
        folder.begin({"settings": {"learning_rate": 1e-3}}, force=True)
    assert not (folder.root / "model").exists() and not (folder.root / "README.md").exists()
    assert (folder.root / "my-notes.txt").read_text() == "mine" and folder.incomplete()


def test_an_estimate_that_lost_records_exits_3(tmp_path):
    """`run --estimate`: a sample record whose filter request fails on every try is a
    projection short of it: the estimate is written and printed, and the exit is 3."""
    out, cache = tmp_path / "run", tmp_path / "c.sqlite"

    def fail_filter(path, body):
        return "500" if "well formed" in json.dumps(body) else None

    with FaultServer(rule=fail_filter) as srv:
        proc = run(run_args(out, cache, srv.url, "--estimate", "2"))
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "lost to failed model requests" in proc.stderr
    projection = last_json(proc.stdout)
    assert projection["sampled"] == 2 and (out / "estimate" / "estimate.json").exists()
    filter_row = next(s for s in projection["stages"] if s["stage"] == "filter")
    assert filter_row["sample"]["kept"] == 0

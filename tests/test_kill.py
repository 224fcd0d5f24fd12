"""kill -9 at points through a run, then the same command again: the dataset is the one
an uninterrupted run makes, no file is half-written, and the endpoint (a counting HTTP
server on 127.0.0.1) is paid for each call once. Each case has its own cache and server.

Three kill points run by default (in CI); SAFER_INSTRUCT_KILL_POINTS=all runs all ten
(docs/reliability.md records that run). A call in flight at the moment of the kill is
the one thing that may be paid twice (the server answered, the client died first): after
the last model call it must be none, before it at most one batch in flight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from fault_server import FaultServer
from test_reliability import KEY, completions, run_args

pytestmark = pytest.mark.slow

POINTS = {
    "sources": "stages/00-sources.jsonl",
    "induce": "stages/01-induce.jsonl",
    "filter": "stages/02-filter.jsonl",
    "respond": "stages/03-respond.jsonl",
    "judge": "stages/04-judge.jsonl",
    "assemble": "stages/05-assemble.jsonl",
    "dataset": "dataset/README.md",
    "funnel": "funnel.json",
    "report-plots": "report_files/funnel.png",
    "report": "report.json",
}
"""Kill as soon as the run has gone this far (`reached`: the file is there, and a stage
file is whole)."""
CI_POINTS = ["judge", "dataset", "report-plots"]
MODEL_STAGES = {"sources", "induce", "filter", "respond"}
"""Kill points after which model calls still follow: one may be in flight at the kill."""
SELECTED = list(POINTS) if os.environ.get("SAFER_INSTRUCT_KILL_POINTS") == "all" else CI_POINTS


def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    return subprocess.Popen([sys.executable, "-m", "saferinstruct", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def reached(out: Path, point: str, expected: dict[str, str]) -> bool:
    """The run has gone this far: the file exists and, for a stage file (they grow while
    the stages stream), holds all its lines."""
    target = out / POINTS[point]
    if not target.exists():
        return False
    want = expected.get(POINTS[point])
    return want is None or target.read_text().count("\n") >= want.count("\n")


def outputs(out: Path) -> dict[str, str]:
    """The dataset and the stage files' records (what a rerun must reproduce)."""
    files = sorted((out / "dataset").glob("*.jsonl")) + sorted((out / "stages").glob("*.jsonl"))
    return {f.relative_to(out).as_posix(): f.read_text() for f in files}


def no_temp_files(out: Path) -> None:
    assert not [p for p in out.rglob("*.tmp")], "a half-written file was left behind"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: its outputs and what the server was paid."""
    tmp = tmp_path_factory.mktemp("reference")
    with FaultServer() as srv:
        proc = start(run_args(tmp / "run", tmp / "c.sqlite", srv.url))
        assert proc.wait(600) == 0, proc.stderr.read().decode()[-2000:]
        return outputs(tmp / "run"), completions(srv)


@pytest.mark.parametrize("point", SELECTED)
def test_kill_then_rerun(tmp_path, reference, point):
    expected, paid = reference
    out, cache = tmp_path / "run", tmp_path / "c.sqlite"
    with FaultServer() as srv:
        args = run_args(out, cache, srv.url)
        proc = start(args)
        deadline = time.monotonic() + 600
        while not reached(out, point, expected) and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        if (out / "run.json").exists():  # never "complete" before the report is written
            status = json.loads((out / "run.json").read_text())["status"]
            assert status == "running" or (out / "report.html").exists()
        again = start(args)
        assert again.wait(600) == 0, again.stderr.read().decode()[-2000:]
        twice = completions(srv) - paid
    assert outputs(out) == expected
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    no_temp_files(out)
    print(f"kill point {point}: calls paid twice {twice}")  # recorded by the -rA runs
    in_flight = 8 if point in MODEL_STAGES else 0  # expert.max_concurrency, or none
    assert twice <= in_flight, f"{twice} calls paid twice at kill point {point}"

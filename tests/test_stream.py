"""The streaming runner: records go on to the next stage while the previous one is still
working; stage files grow in input order and a killed run leaves only whole lines (at
most the last cut); the result is byte for byte the serial runner's; requests in flight
stay within the role's `max_concurrency` and fill it. Endpoint cases use the fault
server on 127.0.0.1 (answers after a delay)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT
from fault_server import FaultServer
from saferinstruct import api
from saferinstruct.config import load_config
from saferinstruct.llm.cache import CachedBackend, CallCache
from saferinstruct.llm.openai_http import OpenAIBackend
from saferinstruct.records import new_record
from saferinstruct.rundir import STAGES, RunDir
from saferinstruct.runner import Flow, Step, stream

N = 24


def records(n: int = N) -> list[dict]:
    return [new_record(f"r{i}", f"text {i}", "hate", n=i) for i in range(n)]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_a_record_goes_on_while_the_stage_before_is_still_working(tmp_path):
    """Induce's last chunk waits until filter has seen a record. Streamed, filter gets
    induce's first chunk at once; serial, filter starts only after induce finished, so
    the wait runs out."""

    def steps(timeout: float) -> list[Step]:
        seen = threading.Event()

        def first(chunk: list[dict]) -> list[dict]:
            if chunk[-1]["n"] == N - 1 and not seen.wait(timeout):
                raise AssertionError("the next stage saw no record while this one worked")
            return chunk

        def second(chunk: list[dict]) -> list[dict]:
            seen.set()
            return chunk

        return [Step("induce", first), Step("filter", second)]

    results = stream(records(), steps(10), RunDir(tmp_path / "a"), total=N, flow=Flow(chunk=2))
    assert [r.n_in for r in results] == [N, N]
    with pytest.raises(AssertionError, match="saw no record"):
        stream(records(), steps(0.5), RunDir(tmp_path / "b"), total=N,
               flow=Flow(serial=True, chunk=2))  # fmt: skip


def endpoint(tmp_path: Path, concurrency: int) -> CachedBackend:
    """A real endpoint backend (never called here): it makes the runner plan parallel chunks."""
    inner = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", max_concurrency=concurrency)
    return CachedBackend(inner, CallCache(tmp_path / "calls.sqlite"))


def test_chunks_finishing_out_of_order_are_written_in_order(tmp_path):
    backend = endpoint(tmp_path, 8)
    rng = random.Random(0)
    delays = {i: rng.uniform(0, 0.03) for i in range(N)}

    def slow(chunk: list[dict]) -> list[dict]:
        time.sleep(delays[chunk[0]["n"]])
        for r in chunk:
            r["seen"] = r.get("seen", 0) + 1
        return chunk

    def run(name: str, flow: Flow) -> list[Path]:
        out = RunDir(tmp_path / name)
        steps = [Step("induce", slow, [backend]), Step("filter", slow, [backend])]
        stream(records(), steps, out, total=N, flow=flow)
        return [out.stage("induce"), out.stage("filter")]

    streamed, serial = run("streamed", Flow(chunk=1)), run("serial", Flow(serial=True, chunk=1))
    for a, b in zip(streamed, serial, strict=True):
        assert a.read_bytes() == b.read_bytes()
        assert [json.loads(x)["n"] for x in lines(a)] == list(range(N))
    assert all(json.loads(x)["seen"] == 2 for x in lines(streamed[1]))


def test_a_failing_chunk_stops_every_stage_and_keeps_the_lines_before(tmp_path):
    def boom(chunk: list[dict]) -> list[dict]:
        if chunk[0]["n"] == 12:
            raise RuntimeError("chunk 12 failed")
        return chunk

    out = RunDir(tmp_path)
    with pytest.raises(RuntimeError, match="chunk 12 failed"):
        stream(records(), [Step("induce", boom), Step("filter", None)], out, total=N,
               flow=Flow(chunk=4))  # fmt: skip
    done = [json.loads(x)["n"] for x in lines(out.stage("induce"))]
    assert done == list(range(len(done))) and len(done) <= 12


# ---------------------------------------------------------------- the whole pipeline


def texts_csv(folder: Path, n: int) -> Path:
    path = folder / "texts.csv"
    rows = [f"t{i},{('hate', 'self-harm')[i % 2]},Text {i} about the harbour on day {i}."
            for i in range(n)]  # fmt: skip
    path.write_text("id,category,text\n" + "\n".join(rows) + "\n")
    return path


def overrides(cache: Path, url: str, concurrency: int) -> list[str]:
    return [f"cache={cache}", "induce.mode=prompted", "expert.backend=openai",
            "expert.model=fault-model", f"expert.base_url={url}",
            f"expert.max_concurrency={concurrency}", "source.limit=null",
            "filter.verdict.mode=json", "judge.verdict.mode=json", "respond.candidates=1",
            "respond.prefer_declining=false", "judge.chosen_must_decline=false"]  # fmt: skip


def outputs(out: Path) -> dict[str, bytes]:
    files = sorted((out / "dataset").glob("*.jsonl")) + sorted((out / "stages").glob("*.jsonl"))
    return {f.relative_to(out).as_posix(): f.read_bytes() for f in files}


def whole_lines_in_order(path: Path, ids: list[str]) -> int:
    """The lines of a stage file being written: each whole line parses, the ids are the
    first ones of the sources in order; only the last line may be cut. Returns the count."""
    raw = path.read_text() if path.exists() else ""
    parts = raw.split("\n")
    whole = [json.loads(x) for x in parts[:-1]]
    assert [r["id"] for r in whole] == ids[: len(whole)]
    return len(whole)


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory):
    """One streamed and one serial run of 40 texts, every role on a server answering
    after 50 ms with 4 requests in flight at most; what the stage files looked like
    while the streamed one ran."""
    tmp = tmp_path_factory.mktemp("stream")
    texts = texts_csv(tmp, 40)
    ids = [f"t{i}" for i in range(40)]
    seen: list[tuple[int, int]] = []

    def watch(out: Path, stop: threading.Event) -> None:
        run_ = RunDir(out)
        while not stop.is_set():
            try:
                counts = [whole_lines_in_order(run_.stage(s), ids) for s in ("filter", "respond")]
            except (json.JSONDecodeError, FileNotFoundError):
                continue
            seen.append((counts[0], counts[1]))
            time.sleep(0.01)

    result = {}
    for name, flow in (("streamed", Flow()), ("serial", Flow(serial=True))):
        with FaultServer(default="slow", slow_s=0.05) as srv:
            cfg = load_config(ROOT / "configs/quickstart.yaml",
                              overrides(tmp / f"{name}.sqlite", srv.url, 4))  # fmt: skip
            api.use_input(cfg, texts)
            stop = threading.Event()
            watcher = threading.Thread(target=watch, args=(tmp / name, stop))
            if name == "streamed":
                watcher.start()
            summary = api.run(cfg, tmp / name, flow=flow)
            stop.set()
            if watcher.is_alive():
                watcher.join()
            result[name] = (outputs(tmp / name), srv.peak_in_flight, srv.counts["total"], summary)
    return result, seen


def test_streamed_run_equals_the_serial_run_byte_for_byte(pipeline_runs):
    result, _ = pipeline_runs
    streamed, serial = result["streamed"][0], result["serial"][0]
    assert set(streamed) == set(serial) and len(streamed) == len(STAGES) + 2
    for name in streamed:
        assert streamed[name] == serial[name], name
    assert result["streamed"][2] == result["serial"][2]  # the same requests were sent


def test_requests_in_flight_fill_the_role_and_stay_within_it(pipeline_runs):
    result, _ = pipeline_runs
    assert result["streamed"][1] == 4
    counts = {s["stage"]: s for s in result["streamed"][3]["stages"][1:]}
    assert sum(s["http_attempts"] for s in counts.values()) == result["streamed"][2]
    assert all(s["model_calls"] == s["http_attempts"] for s in counts.values())


def test_respond_works_while_filter_still_does(pipeline_runs):
    _, seen = pipeline_runs
    assert any(0 < responded and filtered < 40 for filtered, responded in seen), seen[-5:]


def test_a_killed_run_leaves_whole_lines_and_the_rerun_finishes_it(tmp_path, pipeline_runs):
    texts = texts_csv(tmp_path, 40)
    ids = [f"t{i}" for i in range(40)]
    out, cache = tmp_path / "run", tmp_path / "c.sqlite"
    with FaultServer(default="slow", slow_s=0.2) as srv:
        args = [sys.executable, "-m", "saferinstruct", "run", "-c", "configs/quickstart.yaml",
                "--input", str(texts), "--out", str(out)]  # fmt: skip
        for item in overrides(cache, srv.url, 2):
            args += ["--set", item]
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            path = RunDir(out).stage("filter")
            if path.exists() and len(lines(path)) >= 4:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        counts = {s: whole_lines_in_order(RunDir(out).stage(s), ids) for s in STAGES[:5]}
        assert 4 <= counts["filter"] < 40 and counts["sources"] >= counts["filter"]
        again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert outputs(out) == pipeline_runs[0]["serial"][0]

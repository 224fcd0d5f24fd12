"""One role served by several replicas (`base_url: [url1, url2]`): work spreads over them
(fewest requests in flight first), a replica that dies mid-run is set aside and its
requests go to the others, and the output is the same as with one server. The servers
are real HTTP servers on 127.0.0.1: the fault-injecting one, and `safer-instruct serve`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from fault_server import FaultServer
from saferinstruct.errors import BadInput, EndpointDown
from saferinstruct.llm.base import GenParams
from saferinstruct.llm.openai_http import OpenAIBackend
from servers import completions_served, serve_proc
from test_reliability import ROOT, run, run_args

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [[{"role": "user", "content": f"Question number {i}?"}] for i in range(40)]
PARAMS = GenParams(max_new_tokens=8, temperature=0.0)
FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5.0, "api_key": "test"}


@pytest.fixture
def two() -> Iterator[tuple[FaultServer, FaultServer]]:
    a, b = FaultServer().start(), FaultServer().start()
    yield a, b
    a.stop()
    b.stop()


def replicas(*urls: str, **kw: object) -> OpenAIBackend:
    return OpenAIBackend("fault-model", base_url=list(urls), **{**FAST, **kw})


def test_work_spreads_over_replicas_and_answers_match_one_server(two) -> None:
    a, b = two
    both = replicas(a.url, b.url, max_concurrency=4).generate(PROMPTS, PARAMS)
    assert a.counts["total"] + b.counts["total"] == len(PROMPTS)
    assert min(a.counts["total"], b.counts["total"]) >= len(PROMPTS) // 4
    with FaultServer() as one:
        alone = replicas(one.url, max_concurrency=4).generate(PROMPTS, PARAMS)
    assert [c.texts for c in both] == [c.texts for c in alone]
    assert all(c.error is None for c in both)


def test_a_replica_that_dies_mid_run_is_set_aside(two) -> None:
    a, b = two
    b.rule = lambda path, body: "close" if b.counts["total"] > 5 else None  # dies after 5
    backend = replicas(a.url, b.url, max_concurrency=4, max_retries=2)
    out = backend.generate(PROMPTS, PARAMS)
    assert all(c.error is None for c in out), [c.error for c in out if c.error]
    # set aside after failing: it is not sent every other request while it is down
    assert b.counts["total"] <= 10 and a.counts["total"] >= len(PROMPTS) - 5
    b.stop()  # gone for good: the next batch goes to the live one, none lost
    again = backend.generate(PROMPTS[:10], PARAMS)
    assert all(c.error is None for c in again)


def test_all_replicas_down_is_endpoint_down() -> None:
    with FaultServer() as a, FaultServer() as b:
        urls = [a.url, b.url]
    with pytest.raises(EndpointDown):
        replicas(*urls, max_retries=3).generate(PROMPTS[:4], PARAMS)


def test_replicas_must_serve_the_same_weights() -> None:
    with FaultServer(models=[{"id": "fault-model", "root": "/w/one"}]) as a, \
         FaultServer(models=[{"id": "fault-model", "root": "/w/two"}]) as b:  # fmt: skip
        with pytest.raises(BadInput, match="different weights"):
            replicas(a.url, b.url).identity()


@pytest.mark.slow
def test_pipeline_on_two_serve_replicas_one_killed_mid_run(tmp_path) -> None:
    """Two `safer-instruct serve` processes behind the expert role; one is killed after
    it has served a few requests. Both served work, the run finishes, and its stage files
    and dataset equal a run on one server (per-record seeds)."""
    env = {**os.environ, "OPENAI_API_KEY": "test"}
    with serve_proc(name="fault-model") as (one, _), serve_proc(name="fault-model") as (two, p2):
        args = run_args(tmp_path / "both", tmp_path / "c1.sqlite", f"[{one}, {two}]",
                        "--limit", "2")  # fmt: skip
        log = (tmp_path / "both.log").open("w")
        cmd = [sys.executable, "-m", "saferinstruct", *args]
        both = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 300
        while completions_served(two) < 3 and both.poll() is None:
            assert time.monotonic() < deadline, "replica two got no work"
            time.sleep(0.2)
        killed_after = completions_served(two)
        assert both.poll() is None, "the run ended before the kill"
        p2.kill()
        both.wait(timeout=600)
        log.close()
        assert both.returncode in (0, 4), (tmp_path / "both.log").read_text()[-2000:]
        assert completions_served(one) > 0 and killed_after >= 3
        alone = run(run_args(tmp_path / "one", tmp_path / "c2.sqlite", one, "--limit", "2"))
        assert alone.returncode == both.returncode, alone.stderr[-2000:]
    names = [f"stages/{s}.jsonl" for s in ("01-induce", "02-filter", "03-respond", "04-judge")]
    for name in [*names, "dataset/train.jsonl", "dataset/test.jsonl"]:
        a, b = tmp_path / "both" / name, tmp_path / "one" / name
        assert a.exists() == b.exists(), name
        if a.exists():
            assert a.read_text() == b.read_text(), name


@pytest.mark.parametrize(("concurrency", "texts"), [(4, 12), (32, 80)])
def test_a_stage_keeps_max_concurrency_requests_in_flight_and_no_more(tmp_path, concurrency,
                                                                     texts):  # fmt: skip
    """The runner hands an endpoint role enough records that it fills its
    `max_concurrency` (it used to hand 16 at a time, whatever the setting), and the
    backend never exceeds it (counted at the server)."""
    from saferinstruct import api
    from saferinstruct.config import load_config

    csv = tmp_path / "texts.csv"
    csv.write_text("id,category,text\n" + "".join(
        f"t{i},{('hate', 'self-harm')[i % 2]},Synthetic text {i} about the weather.\n"
        for i in range(texts)))  # fmt: skip
    with FaultServer(default="slow", slow_s=1.5) as srv:
        cfg = load_config(ROOT / "configs/quickstart.yaml", overrides=[
            f"cache={tmp_path / 'c.sqlite'}", "induce.mode=prompted", "expert.backend=openai",
            "expert.model=fault-model", f"expert.base_url={srv.url}",
            f"expert.max_concurrency={concurrency}"])  # fmt: skip
        api.use_input(cfg, csv)
        result = api.induce(api.read_sources(cfg, limit=texts), cfg, tmp_path / "run")
    assert result.n_in == texts and srv.counts["total"] == texts
    assert srv.peak_in_flight == concurrency

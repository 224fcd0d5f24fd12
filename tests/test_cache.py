"""The call cache: hits, misses, invalidation by model/params/prompt, errors not cached,
two processes at once, and no model load when everything is cached."""

from __future__ import annotations

import json
import multiprocessing as mp
from dataclasses import dataclass, field

from saferinstruct.llm.base import Capabilities, Completion, GenParams, Score
from saferinstruct.llm.cache import CachedBackend, CallCache


@dataclass
class CountingBackend:
    """A deterministic in-process backend that counts what reaches it (the cache's
    contract is about what is *sent*, so counting is the behaviour under test)."""

    name: str = "m1"
    kind: str = "local"
    sent: list = field(default_factory=list)
    fail: set = field(default_factory=set)
    loads: int = 0

    def identity(self):
        return f"test:{self.name}"

    def capabilities(self):
        return Capabilities(score=True)

    def generate(self, prompts, params):
        self.loads += 1
        self.sent.extend(prompts)
        return [
            Completion(error="boom")
            if str(p) in self.fail
            else Completion(texts=[f"{self.name}:{p}:{params.temperature}"] * params.n)
            for p in prompts
        ]

    def score(self, prompts, continuations):
        self.sent.extend(prompts)
        return [Score(logprob=-float(len(c)), n_tokens=len(c)) for c in continuations]


def test_hit_miss_and_order(tmp_path):
    cache = CallCache(tmp_path / "c.sqlite")
    inner = CountingBackend()
    b = CachedBackend(inner, cache)
    first = b.generate(["a", "b"], GenParams())
    assert [c.text for c in first] == ["m1:a:0.0", "m1:b:0.0"]
    second = b.generate(["b", "c", "a"], GenParams())
    assert [c.text for c in second] == ["m1:b:0.0", "m1:c:0.0", "m1:a:0.0"]
    assert inner.sent == ["a", "b", "c"]
    assert (b.stats.hits, b.stats.misses) == (2, 3)


def test_changed_params_model_or_prompt_recompute_only_that(tmp_path):
    cache = CallCache(tmp_path / "c.sqlite")
    b1 = CachedBackend(CountingBackend("m1"), cache)
    b1.generate(["a", "b"], GenParams())
    b1.generate(["a"], GenParams(temperature=0.5))
    b1.generate([[{"role": "user", "content": "a"}]], GenParams())
    assert len(b1.inner.sent) == 4
    b2 = CachedBackend(CountingBackend("m2"), cache)
    b2.generate(["a"], GenParams())
    assert b2.inner.sent == ["a"]
    # a new backend object on the same model and cache file sends nothing
    b3 = CachedBackend(CountingBackend("m1"), CallCache(tmp_path / "c.sqlite"))
    b3.generate(["a", "b"], GenParams())
    assert b3.inner.sent == [] and b3.inner.loads == 0


def test_failed_calls_are_returned_not_cached(tmp_path):
    cache = CallCache(tmp_path / "c.sqlite")
    inner = CountingBackend(fail={"bad"})
    b = CachedBackend(inner, cache)
    out = b.generate(["ok", "bad"], GenParams())
    assert out[0].error is None and out[1].error == "boom"
    assert b.stats.errors == 1
    inner.fail = set()
    out = b.generate(["ok", "bad"], GenParams())
    assert out[1].text == "m1:bad:0.0"
    assert inner.sent == ["ok", "bad", "bad"]


def test_score_is_cached_per_continuation(tmp_path):
    b = CachedBackend(CountingBackend(), CallCache(tmp_path / "c.sqlite"))
    s1 = b.score(["p", "p"], ["xy", "xyz"])
    s2 = b.score(["p"], ["xyz"])
    assert s1[1].logprob == s2[0].logprob == -3.0
    assert len(b.inner.sent) == 2


def _writer(path, start, count):
    cache = CallCache(path)
    for i in range(start, start + count):
        cache.put_many({f"k{i}": {"v": i}})


def test_two_processes_write_safely(tmp_path):
    path = tmp_path / "c.sqlite"
    CallCache(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, s, 200)) for s in (0, 200)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = CallCache(path)
    assert len(cache) == 400
    got = cache.get_many([f"k{i}" for i in range(400)])
    assert all(got[f"k{i}"] == {"v": i} for i in range(400))
    assert cache._db().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_endpoint_down_keeps_finished_calls(tmp_path):
    import pytest

    from saferinstruct.errors import EndpointDown

    class Dying(CountingBackend):
        def generate(self, prompts, params):
            self.sent.extend(prompts)
            done = {0: Completion(texts=[f"ok:{prompts[0]}"])}
            raise EndpointDown("endpoint x is down", done)

    cache = CallCache(tmp_path / "c.sqlite")
    with pytest.raises(EndpointDown):
        CachedBackend(Dying(), cache).generate(["a", "b", "c"], GenParams())
    healthy = CachedBackend(CountingBackend(), cache)
    out = healthy.generate(["a", "b", "c"], GenParams())
    assert out[0].text == "ok:a"
    assert healthy.inner.sent == ["b", "c"]


def test_a_call_another_process_is_making_is_waited_for_not_paid_twice(tmp_path):
    """Two `induce` commands at once, on one cache, against one slow endpoint: the server
    (a real HTTP server counting what it receives) gets each request once."""
    import subprocess
    import sys

    from conftest import ROOT
    from fault_server import FaultServer

    src = tmp_path / "texts.csv"
    src.write_text("id,text\n" + "".join(f"t{i},Water boils at {90 + i} degrees up there.\n"
                                         for i in range(4)))  # fmt: skip
    with FaultServer(default="slow", slow_s=1.5) as srv:
        def start(out: str) -> subprocess.Popen:
            cmd = [sys.executable, "-m", "saferinstruct", "induce", "--input", str(src),
                   "--out", str(tmp_path / out), "--mode", "prompted", "--model",
                   f"openai:fault-model@{srv.url}", "--set", f"cache={tmp_path / 'c.sqlite'}",
                   "--set", "expert.max_concurrency=1", "--set", "expert.timeout_s=30"]  # fmt: skip
            return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip

        procs = [start("a"), start("b")]
        outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert srv.counts["total"] == 4
    stages = [(tmp_path / d / "stages" / "01-induce.jsonl").read_text() for d in ("a", "b")]
    assert stages[0] == stages[1]


_KILLED_CHILD = """
import sys
from saferinstruct.llm.base import GenParams
from saferinstruct.llm.cache import CachedBackend, CallCache
from saferinstruct.llm.openai_http import OpenAIBackend
url, path = sys.argv[1], sys.argv[2]
inner = OpenAIBackend("fault-model", base_url=url, api_key="t", max_concurrency=8, timeout_s=120)
prompts = [f"Question {i}" + (" slow" if i == 5 else "") for i in range(6)]
CachedBackend(inner, CallCache(path)).generate(prompts, GenParams(max_new_tokens=8))
"""


def test_a_kill_mid_batch_loses_only_the_requests_in_flight(tmp_path):
    """Answers are stored as they arrive, not when the batch ends: kill -9 while one slow
    request of six is in flight, and the rerun sends only that one again."""
    import sqlite3
    import subprocess
    import sys
    import time

    from fault_server import FaultServer
    from saferinstruct.llm.openai_http import OpenAIBackend

    def slow(path: str, body: dict) -> str | None:
        return "slow" if "slow" in json.dumps(body) else None

    path = tmp_path / "c.sqlite"
    with FaultServer(rule=slow, slow_s=60) as srv:
        child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, srv.url, str(path)])
        deadline = time.monotonic() + 120
        stored = 0
        while stored < 5:
            assert time.monotonic() < deadline and child.poll() is None, f"{stored} stored"
            time.sleep(0.2)
            if path.exists():
                try:
                    with sqlite3.connect(path) as db:
                        stored = db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
                except sqlite3.OperationalError:  # the child is creating the tables
                    stored = 0
        child.kill()
        child.wait()
        assert srv.counts["total"] == 6
        srv.rule = None  # the slow one answers at once now
        inner = OpenAIBackend("fault-model", base_url=srv.url, api_key="t", timeout_s=10)
        prompts = [f"Question {i}" + (" slow" if i == 5 else "") for i in range(6)]
        out = CachedBackend(inner, CallCache(path)).generate(prompts, GenParams(max_new_tokens=8))
    assert all(c.error is None for c in out)
    assert srv.counts["total"] == 7  # only the request in flight at the kill was sent again


def test_claims_of_a_dead_process_are_taken_over(tmp_path):
    import subprocess
    import sys

    cache = CallCache(tmp_path / "c.sqlite")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    db = cache._db()
    db.execute("INSERT INTO claims VALUES ('k-dead', 'ghost', ?, ?, 0)", (cache.host, int(dead)))
    import time

    db.execute("INSERT INTO claims VALUES ('k-live', 'other', 'elsewhere', 1, ?)", (time.time(),))
    mine, theirs = cache.claim(["k-dead", "k-live", "k-free"])
    assert sorted(mine) == ["k-dead", "k-free"] and theirs == ["k-live"]
    cache.release(mine)
    assert cache.claim(["k-free"]) == (["k-free"], [])


def test_a_broken_cache_file_is_one_line_naming_it(tmp_path):
    import pytest

    from saferinstruct.errors import BadInput

    bad = tmp_path / "calls.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(BadInput) as info:
        CallCache(bad)
    msg = str(info.value)
    assert str(bad) in msg and "move it aside" in msg and "\n" not in msg

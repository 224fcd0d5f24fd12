"""The call cache: hits, misses, invalidation by model/params/prompt, errors not cached,
two processes at once, and no model load when everything is cached."""

from __future__ import annotations

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

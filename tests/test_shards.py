"""Sharded runs for several machines: `run --shard I/N` takes a stable slice of the sources
by a hash of their ids; `assemble --merge` builds one dataset from the shard directories
with the same dedup and split. Two shards merged equal one unsharded run, byte for byte
(records in source order). The expert is a counting endpoint on 127.0.0.1."""

from __future__ import annotations

import pytest

from fault_server import FaultServer
from test_reliability import run, run_args

pytestmark = pytest.mark.slow


def test_two_shards_merged_equal_one_run(tmp_path):
    cache = tmp_path / "c.sqlite"
    with FaultServer() as srv:
        extra = ["--limit", "4"]
        whole = run([*run_args(tmp_path / "whole", cache, srv.url), *extra])
        assert whole.returncode == 0, whole.stderr[-2000:]
        shards = []
        for i in (1, 2):
            out = tmp_path / f"shard{i}"
            proc = run([*run_args(out, tmp_path / f"c{i}.sqlite", srv.url), *extra,
                        "--shard", f"{i}/2"])  # fmt: skip
            assert proc.returncode in (0, 4), proc.stderr[-2000:]  # a shard may have no pairs
            shards.append(out)
        merged = run(["assemble", "--out", str(tmp_path / "merged"), "--config",
                      "configs/quickstart.yaml", *sum((["--merge", str(s)] for s in shards), []),
                      *run_args(tmp_path / "x", cache, srv.url)[7:]])  # fmt: skip
        assert merged.returncode == 0, merged.stderr[-2000:]
    sizes = [len((s / "stages" / "00-sources.jsonl").read_text().splitlines()) for s in shards]
    assert sum(sizes) == 8 and all(sizes)  # a partition of the 8 sources
    for name in ("dataset/train.jsonl", "dataset/test.jsonl", "stages/05-assemble.jsonl",
                 "stages/04-judge.jsonl"):  # fmt: skip
        a, b = tmp_path / "whole" / name, tmp_path / "merged" / name
        assert a.exists() == b.exists(), name
        if a.exists():
            assert a.read_bytes() == b.read_bytes(), name
    bad = run(["run", "--out", str(tmp_path / "b"), "--shard", "3/2"])
    assert bad.returncode == 2 and "I/N" in bad.stderr

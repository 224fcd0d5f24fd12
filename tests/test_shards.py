"""Sharded runs for several machines: `run --shard I/N` takes a stable slice of the sources
by a hash of their ids; `assemble --merge` builds one dataset from the shard directories
with the same dedup and split. Two shards merged equal one unsharded run, byte for byte
(records in source order), and so does `run --processes 2`, which runs the two shards as
child processes at once and merges them. The expert is a counting endpoint on 127.0.0.1."""

from __future__ import annotations

import json

import pytest

from fault_server import FaultServer
from test_reliability import run, run_args

pytestmark = pytest.mark.slow


EXTRA = ["--limit", "4"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """One unsharded run of 8 sources: what the sharded runs must equal."""
    tmp = tmp_path_factory.mktemp("whole")
    with FaultServer() as srv:
        proc = run([*run_args(tmp / "whole", tmp / "c.sqlite", srv.url), *EXTRA])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp / "whole"


def same_outputs(a_dir, b_dir, names):
    for name in names:
        a, b = a_dir / name, b_dir / name
        assert a.exists() == b.exists(), name
        if a.exists():
            assert a.read_bytes() == b.read_bytes(), name


def test_two_shards_merged_equal_one_run(tmp_path, whole):
    with FaultServer() as srv:
        shards = []
        for i in (1, 2):
            out = tmp_path / f"shard{i}"
            proc = run([*run_args(out, tmp_path / f"c{i}.sqlite", srv.url), *EXTRA,
                        "--shard", f"{i}/2"])  # fmt: skip
            assert proc.returncode in (0, 4), proc.stderr[-2000:]  # a shard may have no pairs
            shards.append(out)
        merged = run(["assemble", "--out", str(tmp_path / "merged"), "--config",
                      "configs/quickstart.yaml", *sum((["--merge", str(s)] for s in shards), []),
                      *run_args(tmp_path / "x", tmp_path / "c.sqlite", srv.url)[7:]])  # fmt: skip
        assert merged.returncode == 0, merged.stderr[-2000:]
    sizes = [len((s / "stages" / "00-sources.jsonl").read_text().splitlines()) for s in shards]
    assert sum(sizes) == 8 and all(sizes)  # a partition of the 8 sources
    same_outputs(whole, tmp_path / "merged", ("dataset/train.jsonl", "dataset/test.jsonl",
                                              "stages/05-assemble.jsonl", "stages/04-judge.jsonl"))
    bad = run(["run", "--out", str(tmp_path / "b"), "--shard", "3/2"])
    assert bad.returncode == 2 and "I/N" in bad.stderr


def test_processes_run_the_shards_at_once_and_merge_them(tmp_path, whole):
    """`run --processes 2`: two shard runs as child processes, merged into --out: the
    dataset one process makes, byte for byte; run again, it resumes from the shards and
    asks the endpoint for nothing."""
    from test_reliability import completions

    with FaultServer() as srv:
        args = [*run_args(tmp_path / "both", tmp_path / "c2.sqlite", srv.url), *EXTRA,
                "--processes", "2"]  # fmt: skip
        both = run(args)
        assert both.returncode == 0, both.stderr[-2000:]
        asked = completions(srv)
        again = run(args)
        assert again.returncode == 0, again.stderr[-2000:]
        assert completions(srv) == asked  # every call of the rerun came from the cache
        mixed = run([*args, "--shard", "1/2"])
    summary = json.loads(both.stdout.strip().splitlines()[-1])
    assert summary["processes"] == 2 and len(summary["shards"]) == 2
    assert sum(summary["dataset"].values()) == sum(
        1 for s in ("train", "test") for _ in (tmp_path / "both" / "dataset" / f"{s}.jsonl").open()
    )
    shards = sorted((tmp_path / "both" / "shards").glob("*-of-2"))
    sizes = [len((s / "stages" / "00-sources.jsonl").read_text().splitlines()) for s in shards]
    assert len(shards) == 2 and sum(sizes) == 8 and all(sizes)
    same_outputs(whole, tmp_path / "both", ("dataset/train.jsonl", "dataset/test.jsonl",
                                            "stages/05-assemble.jsonl", "stages/04-judge.jsonl"))
    assert mixed.returncode == 2 and "--processes" in mixed.stderr

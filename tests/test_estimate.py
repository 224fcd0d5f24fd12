"""`run --estimate N` before paying: the quickstart's expert behind a real `serve`
(every call counted at the server), N sampled sources through every stage, a projection
per stage, costed at the role's prices; then the real run pays none of the sample's
calls again, and its funnel shows estimate and actual side by side."""

from __future__ import annotations

import json

import pytest

from saferinstruct.estimate import project, side_by_side
from servers import completions_served, serve_process
from test_cli import cli, last_json

PRICE_IN, PRICE_OUT = 0.5, 1.5


def quickstart_args(out, cache, url) -> list[str]:
    return ["run", "--config", "configs/quickstart.yaml", "--out", str(out), "--limit", "2",
            "--set", f"cache={cache}", "--set", "induce.mode=prompted",
            "--set", "induce.generation.max_new_tokens=24",
            "--set", "expert.backend=openai", "--set", "expert.model=smol",
            "--set", f"expert.base_url={url}",
            "--set", f"expert.price_in_per_mtok={PRICE_IN}",
            "--set", f"expert.price_out_per_mtok={PRICE_OUT}"]  # fmt: skip


@pytest.mark.slow
def test_estimate_then_the_run_pays_no_call_twice(tmp_path):
    out, cache = tmp_path / "run", tmp_path / "calls.sqlite"
    with serve_process() as url:
        args = quickstart_args(out, cache, url)
        est = cli(*args, "--estimate", "2", check_rc=0)
        projection = last_json(est.stdout)
        served_by_estimate = completions_served(url)
        assert projection["sources"] == 4 and projection["sampled"] == 2
        stages = {s["stage"]: s for s in projection["stages"]}
        assert list(stages) == ["induce", "filter", "respond", "judge"]
        # every call of the sample went to the server once; the figures are scaled x2
        sample_calls = sum(s["sample"]["model_calls"] for s in stages.values())
        assert sample_calls == served_by_estimate > 0
        for s in stages.values():
            assert s["calls"] == round(s["sample"]["calls"] * 2)
            assert s["tokens_in"] == round(s["sample"]["tokens_in"] * 2)
            want = round(s["tokens_in"] / 1e6 * PRICE_IN + s["tokens_out"] / 1e6 * PRICE_OUT, 4)
            assert s["cost"] == pytest.approx(want, abs=1e-4)
        assert stages["induce"]["tokens_in"] > 0 and stages["respond"]["tokens_out"] > 0
        assert projection["minutes"] is not None and "estimate from 2 of 4" in est.stderr
        assert not (out / "funnel.json").exists()  # the estimate has its own folder
        assert json.loads((out / "estimate" / "estimate.json").read_text())["calls"] == \
            projection["calls"]

        real = cli(*args, check_rc=0)
        summary = last_json(real.stdout)
        served_by_run = completions_served(url) - served_by_estimate
    # the run asked the server only for what the sample had not: no call paid twice
    assert summary["model_calls"] == served_by_run
    assert summary["cache_hits"] >= sample_calls
    compared = summary["estimate"]
    funnel = json.loads((out / "funnel.json").read_text())
    assert funnel["estimate"] == compared
    for stage in ("induce", "filter", "respond", "judge"):
        row = compared["stages"][stage]
        actual = next(s for s in summary["stages"] if s["stage"] == stage)
        assert row["calls"]["actual"] == actual["cache_hits"] + actual["model_calls"]
        assert row["calls"]["estimate"] == stages[stage]["calls"]
    print(json.dumps(compared))  # predicted against actual, for the record


def test_projection_scales_the_sample_and_costs_it():
    summary = {"sources": 4, "dataset": {"train": 2, "test": 1}, "stages": [
        {"stage": "reverse-train"},
        {"stage": "induce", "in": 4, "kept": 4, "cache_hits": 1, "model_calls": 3,
         "tokens_in": 400, "tokens_out": 80, "seconds": 2.0},
        {"stage": "judge", "in": 3, "kept": 3, "cache_hits": 0, "model_calls": 3,
         "tokens_in": 900, "tokens_out": 30, "seconds": 6.0}]}  # fmt: skip
    p = project(summary, 100, {"judge": (2.0, 8.0), "induce": (None, None)})
    induce, judge = p["stages"]
    assert (induce["calls"], induce["tokens_in"], induce["cost"]) == (100, 10000, None)
    assert judge["cost"] == pytest.approx(22500 / 1e6 * 2.0 + 750 / 1e6 * 8.0)
    assert p["pairs"] == 75 and p["minutes"] == pytest.approx(6.0 * 25 / 60, abs=0.05)
    assert p["cost"] == judge["cost"]
    actual = {"dataset": {"train": 60, "test": 10}, "stages": [
        {"stage": "induce", "cache_hits": 100, "model_calls": 0, "tokens_in": 9000,
         "tokens_out": 2100}]}  # fmt: skip
    both = side_by_side(p, actual)
    assert both["stages"]["induce"]["tokens_in"] == {"estimate": 10000, "actual": 9000,
                                                     "ratio": 0.9}  # fmt: skip
    assert both["pairs"]["ratio"] == round(70 / 75, 3)
    cached = project({**summary, "stages": [{**s, "model_calls": 0} for s in summary["stages"]
                                             if s["stage"] != "reverse-train"]}, 100, {})
    assert cached["minutes"] is None and "cache" in cached["time_note"]

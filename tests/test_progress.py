"""Progress that moves: model calls advance inside a batch (the local backend reports
every decoding step), the piped line says records, calls per record, rate and ETA, and
never shows record text."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import pytest

from saferinstruct import progress
from saferinstruct.llm.base import GenParams


@contextmanager
def one_bar(name, total):
    """The bar of a one-stage progress (the runner's `stages_progress` with one name)."""
    with progress.stages_progress([name], total) as bars:
        yield bars[name]


def test_eta_from_records_and_calls():
    assert progress.eta_seconds(10.0, 5, 10, 5.0) == pytest.approx(10.0)
    # inside the first batch: no record done yet, 2 of 8 expected calls made
    assert progress.eta_seconds(10.0, 0, 8, 2.0) == pytest.approx(30.0)
    # respond's tries: 2 calls per record so far, so 8 records expect 16 calls
    assert progress.eta_seconds(10.0, 4, 8, 8.0) == pytest.approx(10.0)
    assert progress.eta_seconds(0.0, 0, 8, 0.0) is None
    assert progress.eta_seconds(10.0, 0, 8, 9.0) is None  # tries beyond one a record
    assert progress.eta_seconds(5.0, 0, None, 1.0) is None


def test_calls_move_inside_a_local_batch(embedded_backend, monkeypatch):
    seen: list[float] = []
    real = progress.Bar.calls_done

    def record(self, n):
        seen.append(n)
        real(self, n)

    monkeypatch.setattr(progress.Bar, "calls_done", record)
    prompts = [[{"role": "user", "content": f"Count to {i}."}] for i in (3, 4)]
    with one_bar("respond", total=2) as bar:
        embedded_backend.generate(prompts, GenParams(max_new_tokens=8))
        bar.advance(2)
    assert len(seen) >= 3  # several steps of one batch, then the rest
    assert bar.calls == pytest.approx(2.0) and bar.done == 2
    assert progress.report_calls(1.0) is None  # no active bar: ignored


def test_piped_line_has_the_figures_and_no_text(caplog, monkeypatch):
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)
    secret = "SECRET-TEXT-OF-A-RECORD"
    with caplog.at_level(logging.INFO, logger="saferinstruct"):
        with one_bar("respond", total=4) as bar:
            progress.report_calls(3)
            bar.advance(2, hits=1)
    line = caplog.records[-1].getMessage()
    assert line.startswith("respond: 2/4 records, 3 model calls (1.5/record)")
    assert "rec/s" in line and "ETA" in line and "cache hits 1" in line
    assert secret not in caplog.text


def test_threads_are_chosen_unless_the_user_chose():
    from saferinstruct import threads

    env: dict[str, str] = {}
    chosen = threads.choose(env)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and chosen["OMP_WAIT_POLICY"] == "PASSIVE"
    small = threads.usable_cores() <= threads.SMALL_MACHINE_CORES
    assert ("OMP_NUM_THREADS" in env) == small
    assert (env.get(threads.ADAPT_ENV) == "1") == small  # training may then use more
    mine = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "4"}
    assert threads.choose(mine) == {} and mine["OMP_NUM_THREADS"] == "4"


def test_the_cli_sets_threads_before_torch_loads():
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import os, sys; from saferinstruct import cli; sys.argv = ['safer-instruct', "
            "'--help']; os.environ.pop('OMP_WAIT_POLICY', None)\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120).stdout.split()  # fmt: skip
    assert out[-2:] == ["PASSIVE", "False"]

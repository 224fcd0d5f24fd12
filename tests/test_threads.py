"""Threads between training steps: every core while the other processes are idle, one
thread while they are busy, and the same bits either way."""

from __future__ import annotations

import copy
import itertools
import subprocess
import sys

import pytest

from saferinstruct import threads

STAT = "cpu  {user} 0 {system} {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"


def stat(user: int, system: int, idle: int) -> str:
    return STAT.format(user=user, system=system, idle=idle)


@pytest.fixture
def torch_threads():
    """Puts torch's thread count back after the test."""
    import torch

    before = torch.get_num_threads()
    yield torch
    torch.set_num_threads(before)


def test_the_choice_from_what_the_others_use():
    assert threads.threads_for(0.0, 2) == 2
    assert threads.threads_for(threads.QUIET_BELOW - 0.01, 4) == 4
    assert threads.threads_for(threads.QUIET_BELOW, 2) == 1
    assert threads.threads_for(1.0, 2) == 1


def test_others_are_the_machine_less_this_process():
    import os

    tick = os.sysconf("SC_CLK_TCK")
    before = threads.cpu_seconds(stat(100, 50, 1000))
    after = threads.cpu_seconds(stat(100 + 3 * tick, 50 + tick, 1000 + 4 * tick))
    assert before is not None and after is not None
    assert after[0] - before[0] == pytest.approx(4.0)  # idle ticks are not busy
    # 4 busy seconds over 4 s of wall time, 1.5 of them this process's own: 0.625 cores
    assert threads.others_cores((before[0], 10.0), (after[0], 11.5), 4.0) == pytest.approx(0.625)
    assert threads.others_cores((0.0, 0.0), (1.0, 2.0), 1.0) == 0.0  # never below zero
    assert threads.cpu_seconds("intr 1 2 3\n") is None


def test_the_watch_follows_the_neighbour(torch_threads):
    """A quiet look raises torch to every core, a busy one takes it back to one; a look
    shorter than a second decides nothing."""
    readings = iter([(0.0, 0.0), (2.0, 2.0), (4.0, 2.5), (4.1, 2.6)])
    clock = iter([0.0, 2.0, 3.0, 3.2])
    watch = threads.CoreWatch(read=lambda: next(readings), clock=lambda: next(clock),
                              enabled=True, cores=2)  # fmt: skip
    torch_threads.set_num_threads(1)
    assert watch.adapt() == 2 and torch_threads.get_num_threads() == 2  # others used 0 cores
    assert watch.adapt() == 1 and torch_threads.get_num_threads() == 1  # others used 1.5
    assert watch.adapt() is None and torch_threads.get_num_threads() == 1  # 0.2 s: no look


def test_the_users_own_threads_are_kept(torch_threads):
    torch_threads.set_num_threads(1)
    watch = threads.CoreWatch(read=lambda: (0.0, 0.0), enabled=False, cores=2)
    assert watch.adapt(wait=True) is None and torch_threads.get_num_threads() == 1
    env: dict[str, str] = {"OMP_NUM_THREADS": "1"}
    threads.choose(env)
    assert threads.ADAPT_ENV not in env  # the user chose: training does not adapt
    if threads.usable_cores() <= threads.SMALL_MACHINE_CORES:
        env = {threads.ADAPT_ENV: "0"}
        threads.choose(env)
        assert env["OMP_NUM_THREADS"] == "1" and env[threads.ADAPT_ENV] == "0"  # kept


def test_training_gives_the_threads_back(torch_threads, monkeypatch):
    """The stages that run after reverse training in one process find the count that was
    there before it (they run two models at once)."""
    from saferinstruct.train.schedule import threads_callback

    monkeypatch.setenv(threads.ADAPT_ENV, "1")
    torch_threads.set_num_threads(1)
    cb = threads_callback()
    cb.watch = threads.CoreWatch(read=lambda: (0.0, 0.0), clock=itertools.count(0.0, 5.0).__next__,
                                 enabled=True, cores=2)  # fmt: skip
    cb.on_train_begin(None, None, None)
    assert torch_threads.get_num_threads() == 2  # quiet: every core while training
    cb.on_train_end(None, None, None)
    assert torch_threads.get_num_threads() == 1


@pytest.mark.skipif(threads.usable_cores() < 2, reason="one core: nothing to adapt")
def test_a_real_neighbour_is_seen(torch_threads):
    """A process spinning on one core: the watch reads it from /proc/stat and keeps one
    thread."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        watch = threads.CoreWatch(enabled=True)
        before = watch.last[0]
        assert watch.adapt(wait=True) == 1
        assert threads.others_cores(before, watch.last[0], threads.MIN_WINDOW_S) >= 0.5
        assert torch_threads.get_num_threads() == 1
    finally:
        spinner.kill()
        spinner.wait()


@pytest.mark.skipif(threads.usable_cores() < 2, reason="one core: one thread only")
def test_one_and_two_threads_give_the_same_bits(embedded_backend, torch_threads):
    """What makes adapting safe: a training step's loss and gradients on the embedded
    model are bit for bit the same at one and at two threads."""
    loaded = embedded_backend.load()
    model = copy.deepcopy(loaded.model).requires_grad_(True)
    batch = loaded.tokenizer(["Write one sentence about the sea.", "Name three colours, please."],
                             return_tensors="pt", padding=True)  # fmt: skip

    def step(n: int) -> tuple:
        torch_threads.set_num_threads(n)
        model.zero_grad(set_to_none=True)
        with torch_threads.enable_grad():
            loss = model(**batch, labels=batch["input_ids"]).loss
            loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    loss1, grads1 = step(1)
    loss2, grads2 = step(2)
    assert torch_threads.equal(loss1, loss2)
    assert len(grads1) == len(grads2) > 100
    assert all(torch_threads.equal(a, b) for a, b in zip(grads1, grads2, strict=True))

"""CPU threads for torch: chosen before torch loads (OpenMP reads its settings then), and
for training, adapted between steps to what the other processes are doing.

OpenMP's default is as many threads as cores, spinning while they wait for each other:
beside a busy neighbour on a 2-core machine that stalls every parallel region (measured,
benchmarks/threads.py: 35.6 tok/s against 114.7 alone). Unless the user set them:
- idle threads sleep (`OMP_WAIT_POLICY=PASSIVE`): 69.0 tok/s beside the neighbour;
- on a machine with 2 cores or fewer, one thread (`OMP_NUM_THREADS=1`): 86.6 tok/s beside
  the neighbour and 85.1 alone, the same either way, so a run does not depend on what
  else the machine is doing (alone, two passive threads would give 105.4);
- training on such a machine looks between optimizer steps at what the other processes
  used of the cores since the last look (/proc/stat less this process's own time): every
  core while they are idle, one thread again as soon as they use half a core
  (`TrainerCallback` in train/schedule.py). A step's arithmetic gives the same bits at
  one or two threads (tests/test_threads.py checks it), so the model does not depend on
  the machine's load; only its speed does.

    choose()          # in the CLI's entry point, before anything imports torch
    watch = CoreWatch(); ...; watch.adapt()   # between training steps
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("saferinstruct")

SMALL_MACHINE_CORES = 2
ADAPT_ENV = "SAFER_INSTRUCT_ADAPT_THREADS"
"""Set to 1 by `choose` where it chose one thread: training may then use more (set it to
0 beforehand to keep one thread throughout)."""
QUIET_BELOW = 0.5
"""Cores the other processes use, below which the machine counts as quiet."""
MIN_WINDOW_S = 1.0
"""A shorter look is noise (the kernel counts in 10 ms ticks): the decision stays."""


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def choose(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set the OpenMP variables the user has not set; returns what was set."""
    env = os.environ if environ is None else environ
    chosen = {}
    if "OMP_WAIT_POLICY" not in env:
        chosen["OMP_WAIT_POLICY"] = "PASSIVE"
    if "OMP_NUM_THREADS" not in env and usable_cores() <= SMALL_MACHINE_CORES:
        chosen["OMP_NUM_THREADS"] = "1"
        if ADAPT_ENV not in env:  # 0: one thread throughout
            chosen[ADAPT_ENV] = "1"
    env.update(chosen)
    return chosen


def cpu_seconds(stat: str | None = None) -> tuple[float, float] | None:
    """(CPU seconds the whole machine has been busy, this process's CPU seconds), or None
    where /proc/stat cannot be read (another OS). `stat`: /proc/stat's text, for tests."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    if stat is None:
        try:
            stat = Path("/proc/stat").read_text(encoding="ascii")
        except OSError:
            return None
    fields = stat.splitlines()[0].split()
    if fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    values = [int(v) for v in fields[1:9]]
    busy = sum(values) - values[3] - values[4]
    own = os.times()
    return busy / tick, own.user + own.system


def others_cores(before: tuple[float, float], after: tuple[float, float],
                 seconds: float) -> float:  # fmt: skip
    """Cores the other processes kept busy between two `cpu_seconds` readings."""
    if seconds <= 0:
        return 0.0
    machine = after[0] - before[0]
    own = after[1] - before[1]
    return max(0.0, machine - own) / seconds


def threads_for(others: float, cores: int) -> int:
    """Every core while the others use less than `QUIET_BELOW` of one, else one thread."""
    return cores if others < QUIET_BELOW else 1


class CoreWatch:
    """Looks, between steps, at what the other processes used since the last look, and
    sets torch's threads from it (`adapt`). Does nothing unless `choose` chose one thread
    (the user's own OMP_NUM_THREADS is kept) or where /proc/stat is not there."""

    def __init__(self, read: Callable[[], tuple[float, float] | None] = cpu_seconds,
                 clock: Callable[[], float] = time.monotonic, enabled: bool | None = None,
                 cores: int | None = None) -> None:  # fmt: skip
        self.read, self.clock = read, clock
        self.enabled = os.environ.get(ADAPT_ENV) == "1" if enabled is None else enabled
        self.cores = usable_cores() if cores is None else cores
        self.last = (self.read(), self.clock())

    def adapt(self, wait: bool = False) -> int | None:
        """Set torch's threads from the other processes' use since the last look; returns
        the number set, or None where it decided nothing (disabled, too short a look).
        `wait`: make a look that is too short long enough (at the start of training)."""
        if not self.enabled or self.cores < 2:
            return None
        (before, then) = self.last
        if wait:
            time.sleep(max(0.0, MIN_WINDOW_S - (self.clock() - then)))
        reading, now = self.read(), self.clock()
        if reading is None or before is None or now - then < MIN_WINDOW_S:
            return None
        self.last = (reading, now)
        others = others_cores(before, reading, now - then)
        want = threads_for(others, self.cores)
        import torch

        if torch.get_num_threads() != want:
            torch.set_num_threads(want)
            log.info("threads: %d (other processes used %.1f of %d cores)", want, others,
                     self.cores)  # fmt: skip
        return want

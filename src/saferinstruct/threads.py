"""CPU threads for torch, chosen before torch loads (OpenMP reads its settings then).

OpenMP's default is as many threads as cores, spinning while they wait for each other:
beside a busy neighbour on a 2-core machine that stalls every parallel region (measured,
benchmarks/threads.py: 35.6 tok/s against 114.7 alone). Unless the user set them:
- idle threads sleep (`OMP_WAIT_POLICY=PASSIVE`): 69.0 tok/s beside the neighbour;
- on a machine with 2 cores or fewer, one thread (`OMP_NUM_THREADS=1`): 86.6 tok/s beside
  the neighbour and 85.1 alone, the same either way, so a run does not depend on what
  else the machine is doing (alone, two passive threads would give 105.4).

    choose()   # in the CLI's entry point, before anything imports torch
"""

from __future__ import annotations

import os

SMALL_MACHINE_CORES = 2


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
    env.update(chosen)
    return chosen

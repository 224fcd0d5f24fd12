"""What this machine's CPU can do, read at run time (machines of one kind differ: one
has native bf16 matrix instructions, the next does not).

    native_bf16()          # True on a CPU with avx512_bf16 or AMX (amx_bf16)
"""

from __future__ import annotations

from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags (as /proc/cpuinfo spells them) of native bf16 arithmetic."""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags: the first `flags` line of /proc/cpuinfo (or of `cpuinfo`);
    empty where there is none (another OS)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 natively (avx512_bf16 or AMX)."""
    return bool(cpu_flags(cpuinfo) & set(BF16_FLAGS))

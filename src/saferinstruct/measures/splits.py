"""Stable hash splits: the same key lands on the same side on every machine and run.

- `split_of(id, fraction)`: reverse-training ids ('validation' / 'train'); the
  helpfulness and recovery evaluations use the 'validation' side, never trained on.
- `hash_fraction(key)`: the number in [0, 1] behind it (also the HH-RLHF parts).
- `seeded_fraction(key, seed)`: the dataset split of assemble, which takes a seed.

Both formulas are kept as they were so that every released split stays the same.

    split_of("42", 0.1)    # 'train' or 'validation', always the same for "42"
"""

from __future__ import annotations

import hashlib


def hash_fraction(key: str) -> float:
    """A stable number in [0, 1]: the first 32 bits of sha1(key), scaled."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def seeded_fraction(key: str, seed: int) -> float:
    """A stable number in [0, 1) for `key` under `seed`: the first 64 bits of
    sha256(seed NUL key), scaled."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(pair_id: str, validation_fraction: float) -> str:
    """'validation' or 'train', stable for a given id (hash based, not row order)."""
    return "validation" if hash_fraction(str(pair_id)) < validation_fraction else "train"

"""Model identity for the call cache: path + content hash, computed once.

Hashing a model's weights takes a second or more, so the hash is memoised in a small
SQLite table keyed on (path, size, mtime) of each file; a changed file is hashed again.
`embedded` is identified by its GGUF file, so a fully cached run needs no conversion.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from ..errors import BadInput
from ..paths import cache_root

_HASHED_SUFFIXES = (".safetensors", ".bin", ".json", ".gguf", ".model", ".txt", ".jinja")


def fingerprint(path: str) -> str:
    """`<resolved path>@<sha256 prefix of its files>`; `embedded@<hash>` for the default."""
    from .embedded import EMBEDDED_NAME, gguf_path

    if path == EMBEDDED_NAME:
        return f"{EMBEDDED_NAME}@{file_hash(gguf_path())}"
    p = Path(path).expanduser().resolve()
    if p.is_file():
        return f"{p}@{file_hash(p)}"
    if not (p / "config.json").exists():
        raise BadInput(f"model directory not found or has no config.json: {p}")
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in _HASHED_SUFFIXES)
    combined = hashlib.sha256()
    for f in files:
        if "checkpoint-" in str(f.relative_to(p)):
            continue
        combined.update(f"{f.relative_to(p)}:{file_hash(f)}\n".encode())
    return f"{p}@{combined.hexdigest()[:16]}"


def file_hash(path: Path) -> str:
    """sha256 prefix of one file, memoised on (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    db = _memo()
    try:
        row = db.execute(
            "SELECT hash FROM hashes WHERE path=? AND size=? AND mtime=?", key
        ).fetchone()
        if row:
            return row[0]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()[:16]
        with db:
            db.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)", (*key, digest))
        return digest
    finally:
        db.close()


def _memo() -> sqlite3.Connection:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(root / "fingerprints.sqlite", timeout=30)
    db.execute(
        "CREATE TABLE IF NOT EXISTS hashes "
        "(path TEXT, size INTEGER, mtime INTEGER, hash TEXT, PRIMARY KEY (path, size, mtime))"
    )
    return db

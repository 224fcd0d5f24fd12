"""The call cache: one SQLite file holding every model call, shared by every run.

A key is the sha256 of (backend kind, model identity, operation, parameters, prompt).
`CachedBackend` wraps any backend: it answers what the cache holds and sends only the
misses to the model, so a rerun makes no call twice and a fully cached run never loads
the model (identity is a content hash, not a load). Each finished call is committed at
once, so a killed run resumes where it stopped. WAL mode; safe with two processes
(SQLite's own locking, with a busy timeout). Failed calls are not cached: they are
tried again on the next run.

    cache = CallCache(Path("calls.sqlite"))
    backend = CachedBackend(LocalBackend("embedded"), cache)
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EndpointDown
from .base import Backend, Capabilities, Completion, GenParams, Prompt, Score


class CallCache:
    """Key -> JSON value, in SQLite (WAL). One connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS calls "
                "(key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"
            )

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        db = self._db()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(f"SELECT key, value FROM calls WHERE key IN ({marks})", chunk)
            found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        if not items:
            return
        now = time.time()
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?)",
                [(k, json.dumps(v), now) for k, v in items.items()],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def __len__(self) -> int:
        return self._db().execute("SELECT COUNT(*) FROM calls").fetchone()[0]


def call_key(kind: str, identity: str, op: str, params: dict[str, Any], prompt: Any) -> str:
    blob = json.dumps(
        {"kind": kind, "model": identity, "op": op, "params": params, "prompt": prompt},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    errors: int = 0
    calls: list[int] = field(default_factory=list)
    """Size of each batch actually sent to the model."""


class CachedBackend:
    """Any backend behind the call cache (composition: it is a Backend too)."""

    def __init__(self, inner: Backend, cache: CallCache) -> None:
        self.inner = inner
        self.cache = cache
        self.kind = inner.kind
        self.stats = CacheStats()
        self._identity: str | None = None

    def identity(self) -> str:
        if self._identity is None:
            self._identity = self.inner.identity()
        return self._identity

    def capabilities(self) -> Capabilities:
        return self.inner.capabilities()

    def generate(self, prompts: list[Prompt], params: GenParams) -> list[Completion]:
        keys = [self._key("generate", params.key(), p) for p in prompts]
        return self._through(
            keys,
            lambda idx: self.inner.generate([prompts[i] for i in idx], params),
            Completion,
        )

    def score(self, prompts: list[Prompt], continuations: list[str]) -> list[Score]:
        keys = [
            self._key("score", {"continuation": c}, p)
            for p, c in zip(prompts, continuations, strict=True)
        ]
        return self._through(
            keys,
            lambda idx: self.inner.score(
                [prompts[i] for i in idx], [continuations[i] for i in idx]
            ),
            Score,
        )

    def _key(self, op: str, params: dict[str, Any], prompt: Prompt) -> str:
        return call_key(self.kind, self.identity(), op, params, prompt)

    def _through(self, keys: list[str], call: Any, cls: Any) -> list[Any]:
        found = self.cache.get_many(list(dict.fromkeys(keys)))
        missing = [i for i, k in enumerate(keys) if k not in found]
        self.stats.hits += len(keys) - len(missing)
        self.stats.misses += len(missing)
        fresh: dict[str, Any] = {}
        if missing:
            self.stats.calls.append(len(missing))
            try:
                results = call(missing)
            except EndpointDown as down:  # keep what finished before the endpoint died
                self.cache.put_many(
                    {keys[missing[j]]: asdict(r) for j, r in down.partial.items()}  # type: ignore[call-overload]
                )
                raise
            for i, result in zip(missing, results, strict=True):
                if result.error is None:
                    fresh[keys[i]] = asdict(result)
                else:
                    self.stats.errors += 1
                found.setdefault(keys[i], asdict(result))
            self.cache.put_many(fresh)
        return [cls(**found[k]) for k in keys]

"""The call cache: one SQLite file holding every model call, shared by every run.

A key is the sha256 of (backend kind, model identity, operation, parameters, prompt).
`CachedBackend` wraps any backend: it answers what the cache holds and sends only the
misses to the model, so a rerun makes no call twice and a fully cached run never loads
the model (identity is a content hash, not a load). Each finished call is committed at
once, so a killed run resumes where it stopped. WAL mode; safe with several processes
(SQLite's own locking, with a busy timeout). Failed calls are not cached: they are tried
again on the next run.

No call is paid twice across processes sharing the file: before sending, a process
*claims* its missing keys (a `claims` table: owner host, pid, time); keys another live
process has claimed are waited for and then read from the cache, not sent again. A
claim of a process that died (kill -9) or is older than `CLAIM_TTL_S` is taken over.

A file that is not a readable SQLite cache is `BadInput` naming it and the way out.

    cache = CallCache(Path("calls.sqlite"))
    backend = CachedBackend(LocalBackend("embedded"), cache)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput, EndpointDown
from ..progress import count, report_calls
from .base import Backend, Capabilities, Completion, GenParams, Prompt, Score

log = logging.getLogger("saferinstruct")

CLAIM_TTL_S = 3600.0
"""A claim older than this is taken over even if its process still lives."""
WAIT_POLL_S = 0.25


BUSY_WAIT_S = 120.0


def _busy(error: sqlite3.Error) -> bool:
    """SQLite's own "another process is writing" (not a broken file)."""
    text = str(error).lower()
    return isinstance(error, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def retry_busy(work: Callable[[], Any]) -> Any:
    """Run `work`, again while SQLite says the file is busy (beyond its own timeout, e.g.
    two processes switching a new file to WAL at once), up to BUSY_WAIT_S."""
    deadline = time.monotonic() + BUSY_WAIT_S
    while True:
        try:
            return work()
        except sqlite3.OperationalError as e:
            if not _busy(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


PAGE_CACHE_KB = 256
"""SQLite's page cache per connection (its default is 2 MB). An endpoint backend stores
answers from each of its request threads, so there are up to `max_concurrency`
connections: at 2 MB each, 64 threads storing 250,000 answers grew by 32 MB, at 256 KB
by 10 MB (measured in a loop of that pattern); lookups that miss this cache are served
by the OS's."""


class CallCache:
    """Key -> JSON value, in SQLite (WAL). One connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{secrets.token_hex(4)}"
        def create() -> None:
            with self._db() as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS calls "
                    "(key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"
                )
                db.execute(
                    "CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT "
                    "NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, created REAL NOT NULL)"
                )

        try:
            retry_busy(create)
        except sqlite3.DatabaseError as e:
            raise self.broken(e) from None

    def broken(self, error: Exception) -> Exception:
        """A broken file is bad input; SQLite still busy after BUSY_WAIT_S is not."""
        if isinstance(error, sqlite3.Error) and _busy(error):
            return error
        return BadInput(
            f"call cache {self.path} is not a readable SQLite file ({error}): move it aside "
            "(finished calls in it are lost) or point `cache:` / SAFER_INSTRUCT_CACHE elsewhere"
        )

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            retry_busy(lambda: db.execute("PRAGMA journal_mode=WAL"))
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KB}")
            self._local.db = db
        return db

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        db = self._db()
        try:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(f"SELECT key, value FROM calls WHERE key IN ({marks})", chunk)
                found.update((k, json.loads(v)) for k, v in rows)
        except sqlite3.DatabaseError as e:
            raise self.broken(e) from None
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        if not items:
            return
        now = time.time()
        self._write(
            lambda db: db.executemany(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?)",
                [(k, json.dumps(v), now) for k, v in items.items()],
            )
        )

    def _write(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        db = self._db()

        def transaction() -> Any:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return result

        try:
            return retry_busy(transaction)
        except sqlite3.DatabaseError as e:
            raise self.broken(e) from None

    # ---------------------------------------------------------------- claims
    def claim(self, keys: list[str]) -> tuple[list[str], list[str]]:
        """Claim the keys nobody is computing: (mine: claimed now, to send; theirs: a live
        process is computing them). Keys answered meanwhile are in neither."""

        def work(db: sqlite3.Connection) -> tuple[list[str], list[str]]:
            mine, theirs = [], []
            now = time.time()
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                done = {k for (k,) in db.execute(
                    f"SELECT key FROM calls WHERE key IN ({marks})", chunk)}  # fmt: skip
                held = self._held_by_others(db, chunk)
                for key in chunk:
                    if key in done:
                        continue
                    if key in held:
                        theirs.append(key)
                        continue
                    db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?)",
                               (key, self.owner, self.host, os.getpid(), now))  # fmt: skip
                    mine.append(key)
            return mine, theirs

        return self._write(work)

    def _held_by_others(self, db: sqlite3.Connection, keys: list[str]) -> set[str]:
        """Those of `keys` (at most 500) a live other process has claimed."""
        marks = ",".join("?" * len(keys))
        rows = db.execute(
            f"SELECT key, owner, host, pid, created FROM claims WHERE key IN ({marks})", keys
        )
        return {key for key, owner, host, pid, created in rows
                if owner != self.owner and self._live(host, pid, created)}  # fmt: skip

    def _live(self, host: str, pid: int, created: float) -> bool:
        if time.time() - created > CLAIM_TTL_S:
            return False
        return host != self.host or _alive(pid)

    def release(self, keys: list[str]) -> None:
        """Drop our claims on `keys` (answered, or failed: another process may try)."""

        def work(db: sqlite3.Connection) -> None:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                db.execute(f"DELETE FROM claims WHERE owner = ? AND key IN ({marks})",
                           [self.owner, *chunk])  # fmt: skip

        if keys:
            self._write(work)

    def wait_for(self, keys: list[str]) -> dict[str, Any]:
        """Wait while another live process holds claims on `keys`; returns what it stored
        (keys it gave up on, or that failed, are missing: the caller claims them)."""
        log.info("cache: waiting for %d calls another process is making", len(keys))
        while True:
            found = self.get_many(keys)
            left = [k for k in keys if k not in found]
            if not left:
                return found
            held = set()
            for start in range(0, len(left), 500):
                held |= self._held_by_others(self._db(), left[start : start + 500])
            if not held:
                return {**found, **self.get_many(left)}
            time.sleep(WAIT_POLL_S)

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
        self._lock = threading.Lock()

    def identity(self) -> str:
        if self._identity is None:
            self._identity = self.inner.identity()
        return self._identity

    def capabilities(self) -> Capabilities:
        return self.inner.capabilities()

    def usage(self) -> dict[str, int]:
        """The inner backend's HTTP counts (attempts, retries, failed, tokens), if any."""
        usage = getattr(self.inner, "usage", None)
        return asdict(usage()) if usage is not None else {}

    def generate(self, prompts: list[Prompt], params: GenParams) -> list[Completion]:
        keys = [self._key("generate", params.key(i), p) for i, p in enumerate(prompts)]
        return self._through(
            keys,
            lambda idx, **sink: self.inner.generate(
                [prompts[i] for i in idx], params.subset(idx), **sink
            ),
            Completion,
        )

    def score(self, prompts: list[Prompt], continuations: list[str]) -> list[Score]:
        keys = [
            self._key("score", {"continuation": c}, p)
            for p, c in zip(prompts, continuations, strict=True)
        ]
        return self._through(
            keys,
            lambda idx, **sink: self.inner.score(
                [prompts[i] for i in idx], [continuations[i] for i in idx], **sink
            ),
            Score,
        )

    def _tally(self, what: str, n: int) -> None:
        """Count on this backend (`stats`) and for the stage doing the work (`count`)."""
        if not n:
            return
        with self._lock:
            attr = {"cache_hits": "hits", "model_calls": "misses", "failed_calls": "errors"}[what]
            setattr(self.stats, attr, getattr(self.stats, attr) + n)
        count(what, n)

    def _key(self, op: str, params: dict[str, Any], prompt: Prompt) -> str:
        return call_key(self.kind, self.identity(), op, params, prompt)

    def _through(self, keys: list[str], call: Any, cls: Any) -> list[Any]:
        """Cached answers, others' answers waited for, the rest sent (each key once)."""
        unique = list(dict.fromkeys(keys))
        first = {k: keys.index(k) for k in unique}
        found = self.cache.get_many(unique)
        hits = sum(k in found for k in keys)
        self._tally("cache_hits", hits)
        report_calls(hits)
        todo = [k for k in unique if k not in found]
        while todo:
            mine, theirs = self.cache.claim(todo)
            if mine:
                found.update(self._send(mine, first, keys, call))
            if theirs:
                found.update(self.cache.wait_for(theirs))
                self._tally("cache_hits", sum(keys.count(k) for k in theirs if k in found))
            todo = [k for k in todo if k not in found]
        answers = [cls(**found[k]) for k in keys]
        count("tokens_in", sum(a.prompt_tokens for a in answers if a.error is None))
        count("tokens_out", sum(a.completion_tokens for a in answers if a.error is None))
        return answers

    def _send(self, mine: list[str], first: dict[str, int], keys: list[str],
              call: Any) -> dict[str, Any]:  # fmt: skip
        """Send the claimed keys (one prompt each), store the answers, release the claims;
        returns every result, failed ones included (they are not stored). A backend that
        answers request by request (`streams_answers`) has each answer stored as it
        arrives, so a kill mid-batch loses only the requests still in flight."""
        idx = [first[k] for k in mine]
        self._tally("model_calls", sum(keys.count(k) for k in mine))
        with self._lock:
            self.stats.calls.append(len(idx))
        sink: dict[str, Any] = {}
        if getattr(self.inner, "streams_answers", False):
            lock = threading.Lock()

            def store(j: int, result: Any) -> None:
                with lock:
                    self.cache.put_many({mine[j]: asdict(result)})

            sink["on_answer"] = store
        try:
            try:
                results = call(idx, **sink)
            except EndpointDown as down:  # keep what finished before the endpoint died
                self.cache.put_many({mine[j]: asdict(r) for j, r in down.partial.items()})  # type: ignore[call-overload]
                raise
            out, fresh = {}, {}
            for key, result in zip(mine, results, strict=True):
                out[key] = asdict(result)
                if result.error is None:
                    fresh[key] = out[key]
                else:
                    self._tally("failed_calls", keys.count(key))
            self.cache.put_many(fresh)
            return out
        finally:
            self.cache.release(mine)

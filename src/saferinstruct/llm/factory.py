"""Build backends from `ModelConfig`s, always behind the call cache, each model once.

`Backends` is a run's pool: asking twice for the same model config (the expert of the
filter, respond and judge stages, say) gives the same backend object, so a local model
loads at most once per run. `Roles` are a run's model roles resolved from that pool.

    pool = Backends(cache_path=None)
    expert = pool.get(ModelConfig(model="embedded"))
    roles = resolve_roles(cfg, pool)          # expert, induce (reverse or expert), forward
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..config import ModelConfig, RunConfig
from ..paths import default_call_cache
from .base import Backend
from .cache import CachedBackend, CallCache

_CACHES: dict[Path, CallCache] = {}


def open_cache(path: str | Path | None) -> CallCache:
    """One CallCache object per file per process (connections are per thread inside)."""
    p = Path(path) if path else default_call_cache()
    if p not in _CACHES:
        _CACHES[p] = CallCache(p)
    return _CACHES[p]


def make_raw_backend(cfg: ModelConfig) -> Backend:
    if cfg.backend == "openai":
        from .openai_http import OpenAIBackend

        return OpenAIBackend.from_config(cfg, api_key(cfg))
    from .local import LocalBackend

    return LocalBackend(cfg.model, batch_size=cfg.batch_size, device=cfg.device, dtype=cfg.dtype)


def api_key(cfg: ModelConfig) -> str | None:
    """The key of an endpoint role: from its key file, else its environment variable."""
    from ..errors import BadInput

    if cfg.api_key_file:
        try:
            return Path(cfg.api_key_file).read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError) as e:
            raise BadInput(f"api_key_file {cfg.api_key_file}: unreadable "
                           f"({type(e).__name__})") from None  # fmt: skip
    return os.environ.get(cfg.api_key_env)


def make_backend(cfg: ModelConfig, cache_path: str | Path | None = None) -> CachedBackend:
    """A new backend for `cfg` behind the call cache (prefer a `Backends` pool in a run)."""
    return CachedBackend(make_raw_backend(cfg), open_cache(cache_path))


class Backends:
    """A run's backends: one per distinct model config, shared by every stage."""

    def __init__(self, cache_path: str | Path | None = None) -> None:
        self.cache_path = cache_path
        self._made: dict[str, CachedBackend] = {}

    def get(self, cfg: ModelConfig) -> CachedBackend:
        key = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
        if key not in self._made:
            self._made[key] = make_backend(cfg, self.cache_path)
        return self._made[key]

    def all(self) -> list[CachedBackend]:
        return list(self._made.values())


@dataclass
class Roles:
    """A run's model roles, each resolved once into a (shared) backend."""

    expert: CachedBackend
    induce: CachedBackend
    """The reverse model, or the expert in prompted mode (or before a reverse model exists)."""
    forward: CachedBackend | None


def resolve_roles(cfg: RunConfig, pool: Backends) -> Roles:
    """The roles of `cfg` from `pool`; call again after `cfg.reverse_model` is filled."""
    expert = pool.get(cfg.expert)
    prompted = cfg.induce.mode == "prompted" or cfg.reverse_model is None
    induce = expert if prompted else pool.get(cfg.reverse_model)  # type: ignore[arg-type]
    forward = pool.get(cfg.forward) if cfg.forward else None
    return Roles(expert=expert, induce=induce, forward=forward)

"""Build a backend from a `ModelConfig`, always behind the call cache.

backend = make_backend(ModelConfig(model="embedded"), cache_path=None)
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import ModelConfig
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

        return OpenAIBackend(
            model=cfg.model,
            base_url=cfg.base_url,
            api_key=os.environ.get(cfg.api_key_env),
            max_concurrency=cfg.max_concurrency,
            max_retries=cfg.max_retries,
            timeout_s=cfg.timeout_s,
            max_failures_in_row=cfg.max_failures_in_row,
            logprobs=cfg.supports_logprobs,
            score=cfg.supports_score,
            json_schema=cfg.supports_json_schema,
        )
    from .local import LocalBackend

    return LocalBackend(cfg.model, batch_size=cfg.batch_size, device=cfg.device, dtype=cfg.dtype)


def make_backend(cfg: ModelConfig, cache_path: str | Path | None = None) -> CachedBackend:
    return CachedBackend(make_raw_backend(cfg), open_cache(cache_path))


def parse_model_spec(spec: str) -> ModelConfig:
    """CLI shorthand: 'embedded', a local directory, or 'openai:NAME@BASE_URL'."""
    if spec.startswith("openai:"):
        name, _, url = spec[len("openai:") :].partition("@")
        return ModelConfig(backend="openai", model=name, base_url=url or None)
    return ModelConfig(backend="local", model=spec)


def with_model(base: ModelConfig | None, spec: str) -> ModelConfig:
    """`base` (a config's model role, keeping its retry/batch settings) pointed at `spec`."""
    import dataclasses

    target = parse_model_spec(spec)
    return dataclasses.replace(
        base or ModelConfig(), backend=target.backend, model=target.model, base_url=target.base_url
    )

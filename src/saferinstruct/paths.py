"""Where things live: the user cache directory and the project's shipped data.

`SAFER_INSTRUCT_CACHE` overrides the cache root (tests point it at a temp dir or a
shared session dir). Nothing here touches the disk at import time.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Root of the user cache: models converted or trained once, and the call cache."""
    env = os.environ.get("SAFER_INSTRUCT_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("safer-instruct"))


def find_artifact(*parts: str) -> Path | None:
    """An artifact stored under `cache_root()/parts`, else its prebuilt copy shipped in
    data/prebuilt/ (built from the shipped data by scripts/prebuild.py, found under the
    same content-hash name), else None. Read-only: artifacts are written to the cache."""
    folders = [cache_root()]
    if not os.environ.get("SAFER_INSTRUCT_NO_PREBUILT"):  # scripts/prebuild.py builds anew
        folders.append(data_dir() / "prebuilt")
    for folder in folders:
        path = folder.joinpath(*parts)
        if path.exists():
            return path
    return None


def default_call_cache() -> Path:
    """The one SQLite call cache shared by every run unless a config names another."""
    return cache_root() / "calls.sqlite"


def project_root() -> Path | None:
    """The checkout this package runs from (it has data/ and configs/), if any."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "data" / "README.md").exists() and (parent / "pyproject.toml").exists():
            return parent
    return None


def data_dir() -> Path:
    """The project's `data/` folder (shipped samples with their licences)."""
    env = os.environ.get("SAFER_INSTRUCT_DATA")
    if env:
        return Path(env)
    root = project_root()
    return root / "data" if root is not None else Path(__file__).resolve().parent / "data"

"""Build data/prebuilt/: what the defaults derive from the shipped data, so that a fresh
clone does not spend minutes on it at its first report: the refusal classifier (on all
three labelled XSTest files, and on each pair of them), the embedding features of those
files, and the harmlessness reward model. The files carry the same content-hash names
as in the user cache (`paths.find_artifact` reads the cache first, then these).

Run after changing the shipped XSTest or HH-RLHF files, the feature or reward code, or
their cache versions (tests/test_prebuilt.py fails until then):

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/prebuild.py
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data" / "prebuilt"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SAFER_INSTRUCT_CACHE"] = tmp  # build into an empty cache
        os.environ["SAFER_INSTRUCT_NO_PREBUILT"] = "1"
        sys.path.insert(0, str(ROOT / "src"))
        from saferinstruct.evaluate.reward import default_reward_model
        from saferinstruct.measures import refusal

        files = refusal.shipped_files()
        refusal.default_classifier()
        for pair in itertools.combinations(files, 2):
            refusal.cached_fit(list(pair))
        for f in files:
            refusal.load_labelled(f).x  # noqa: B018 (stores the features)
        default_reward_model()
        shutil.rmtree(OUT, ignore_errors=True)
        for kind in ("refusal", "reward"):
            shutil.copytree(Path(tmp) / kind, OUT / kind)
    for path in sorted(OUT.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(ROOT)}  {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()

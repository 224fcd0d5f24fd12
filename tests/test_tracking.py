"""Training curves in the trackers a user already has (`--report-to`): TensorBoard and
trackio write local files under OUT/tracking that their own readers load, the card and
training.json point at them, and a tracker changes no identity."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

TINY = ["--max-pairs", "4", "--batch-size", "2", "--max-length", "96", "--epochs", "1",
        "--held-out-share", "0"]  # fmt: skip


def sft(tmp_path, *args, env=None):
    sample = tmp_path / "hate-sample.csv"
    if not sample.exists():
        shutil.copy(ROOT / "data" / "safer-instruct" / "hate-sample.csv", sample)
    return subprocess.run([sys.executable, "-m", "saferinstruct", "sft", "--data", str(sample),
                           "--out", str(tmp_path / "sft"), *TINY, *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=env)  # fmt: skip


def test_an_unknown_tracker_is_bad_input(tmp_path):
    proc = sft(tmp_path, "--report-to", "tensorboard,mlflow")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "report_to" in proc.stderr and "mlflow" in proc.stderr
    assert not (tmp_path / "sft" / "model").exists()


@pytest.mark.slow
def test_curves_go_to_tensorboard_and_trackio(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    env = {k: v for k, v in os.environ.items() if k not in ("TRACKIO_DIR", "WANDB_DIR")}
    proc = sft(tmp_path, "--report-to", "tensorboard,trackio", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "sft"
    record = json.loads((out / "training.json").read_text())
    steps = record["steps"]
    tracking = record["tracking"]
    assert tracking["report_to"] == ["tensorboard", "trackio"]

    # TensorBoard's own reader finds the loss curve, one point per logged step
    board = out / "tracking" / "tensorboard"
    assert tracking["folders"]["tensorboard"] == str(board.resolve())
    events = EventAccumulator(str(board))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert len(losses) >= 1 and max(e.step for e in losses) <= steps
    assert all(e.value > 0 for e in losses)

    # trackio's database, in the training folder (TRACKIO_DIR was not set)
    trackio_dir = out / "tracking" / "trackio"
    assert tracking["folders"]["trackio"] == str(trackio_dir.resolve())
    reader = ("import json, sys; from trackio.sqlite_storage import SQLiteStorage as S; "
              "print(json.dumps([r for r in S.get_logs(sys.argv[1], sys.argv[2])], "
              "default=str))")  # fmt: skip
    logs = subprocess.run([sys.executable, "-c", reader, tracking["project"],
                           tracking["run_name"]], capture_output=True, text=True, check=True,
                          env={**env, "TRACKIO_DIR": str(trackio_dir)}).stdout  # fmt: skip
    assert any("train/loss" in row for row in json.loads(logs)), logs[:500]

    # the card links the tracking folder
    card = (out / "README.md").read_text()
    assert "## tracking" in card and "[tracking/tensorboard](tracking/tensorboard)" in card

    # a tracker changes no weight: without it the same command reuses the model
    weights = out / "model" / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    again = sft(tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "reused" in again.stderr and weights.stat().st_mtime_ns == mtime

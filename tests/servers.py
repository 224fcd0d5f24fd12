"""Start and stop a real `safer-instruct serve` process for tests (127.0.0.1 only)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_process(model: str = "embedded", name: str = "smol") -> Iterator[str]:
    """Run `safer-instruct serve` as a user would; yields its base URL (…/v1)."""
    with serve_proc(model, name) as (url, _proc):
        yield url


@contextmanager
def serve_proc(
    model: str = "embedded", name: str = "smol"
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`serve_process`, also yielding the process (a test may kill it mid-run)."""
    port = free_port()
    cmd = [sys.executable, "-m", "saferinstruct", "serve", "--model", model,
           "--port", str(port), "--served-name", name]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/v1/models", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("serve did not start in 180 s") from None
                time.sleep(0.5)
        yield base + "/v1", proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def server_stats(base_v1: str) -> dict[str, Any]:
    with urllib.request.urlopen(base_v1[: -len("/v1")] + "/stats", timeout=10) as r:
        return json.load(r)


def completions_served(base_v1: str) -> int:
    """Completion requests the server received (what a hosted API bills; not /v1/models)."""
    paths = server_stats(base_v1)["by_path"]
    return paths.get("/v1/chat/completions", 0) + paths.get("/v1/completions", 0)

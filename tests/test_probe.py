"""`safer-instruct models --probe URL`: what a server supports, found by asking it with
the requests the stages send. Real servers on 127.0.0.1: our `serve` (supports all), and
the fault-injecting server told to refuse some request shapes with 400, as servers that
lack a feature do."""

from __future__ import annotations

import os

import pytest

from fault_server import FaultServer
from saferinstruct.errors import EndpointDown
from saferinstruct.llm.probe import probe
from servers import serve_process
from test_cli import cli, last_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def lacks_n_and_echo(path: str, body: dict) -> str | None:
    return "400" if body.get("n", 1) > 1 or body.get("echo") else None


def test_probe_finds_what_a_server_lacks_and_the_settings_to_match() -> None:
    with FaultServer(rule=lacks_n_and_echo) as srv:
        caps = probe(srv.url)
    assert caps["model"] == "fault-model" and caps["chat"] and caps["completions"]
    assert caps["top_logprobs_max"] == 20
    assert caps["n"] is False and caps["echo_scoring"] is False
    assert set(caps["why"]) >= {"n", "echo_scoring"} and "400" in caps["why"]["n"]
    assert caps["config"] == {"supports_logprobs": True, "supports_json_schema": False,
                              "supports_score": False}  # fmt: skip


def test_probe_of_a_dead_port_is_endpoint_down_and_exit_2() -> None:
    with FaultServer() as srv:
        url = srv.url
    with pytest.raises(EndpointDown):
        probe(url)
    proc = cli("models", "--probe", url)
    assert proc.returncode == 2 and "is down" in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if ln.strip()]) <= 2


def test_probe_of_an_unserved_model_names_what_is_served() -> None:
    with FaultServer() as srv:
        proc = cli("models", "--probe", srv.url, "--model", "other")
    assert proc.returncode == 2 and "fault-model" in proc.stderr


@pytest.mark.slow
def test_probe_of_our_serve_finds_everything_the_stages_use() -> None:
    with serve_process(name="smol") as url:
        proc = cli("models", "--probe", url)
    assert proc.returncode == 0, proc.stderr[-2000:]
    caps = last_json(proc.stdout)
    assert caps["model"] == "smol" and "root=" in caps["identity"]
    assert caps["config"] == {"supports_logprobs": True, "supports_json_schema": True,
                              "supports_score": True}  # fmt: skip
    assert caps["n"] is True
    assert caps["top_logprobs_max"] == 20 and caps["why"] == {}

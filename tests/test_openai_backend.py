"""OpenAIBackend against a real HTTP server that speaks the protocol and injects faults."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fault_server import FaultServer, chat_answer, text_answer, token_logprob, tokenize
from saferinstruct.errors import BadInput
from saferinstruct.llm.base import Backend, GenParams
from saferinstruct.llm.openai_http import OpenAIBackend, continuation_span

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHAT = [{"role": "user", "content": "Write a haiku about tea."}]
TEXT = "Once upon a time"
FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5.0}


@pytest.fixture
def serve() -> Iterator[Callable[..., FaultServer]]:
    started: list[FaultServer] = []

    def make(**kw: Any) -> FaultServer:
        srv = FaultServer(**kw).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


def backend(srv: FaultServer | str, **kw: Any) -> OpenAIBackend:
    url = srv if isinstance(srv, str) else srv.url
    return OpenAIBackend("fault-model", base_url=url, api_key="test", **{**FAST, **kw})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_protocol_identity_and_capabilities(serve: Callable[..., FaultServer]) -> None:
    srv = serve(models=[{"id": "served-name", "root": "/w/llama@abc", "created": 123}])
    b = OpenAIBackend("served-name", base_url=srv.url, score=False, n=False)
    assert isinstance(b, Backend)
    assert b.kind == "openai" and b.identity() == "openai:served-name|root=/w/llama@abc"
    assert srv.counts["/v1/models"] == 1 and srv.counts["total"] == 0
    assert b.identity() == b.identity() and srv.counts["/v1/models"] == 1  # asked once
    caps = b.capabilities()
    assert caps.logprobs and caps.json_schema and not caps.score and not caps.n
    assert "test" not in repr(OpenAIBackend("m", base_url="http://x/v1", api_key="test"))


def test_chat_and_text_prompts_with_n3(serve: Callable[..., FaultServer]) -> None:
    srv = serve()
    params = GenParams(n=3, max_new_tokens=50, temperature=0.7, seed=5)
    chat, text = backend(srv).generate([CHAT, TEXT], params)
    assert chat.error is None and text.error is None
    assert srv.counts["/v1/chat/completions"] == 1 and srv.counts["/v1/completions"] == 1
    chat_body = next(b for b in srv.bodies if "messages" in b)
    text_body = next(b for b in srv.bodies if "prompt" in b)
    assert chat_body["messages"] == CHAT and text_body["prompt"] == TEXT
    for body in (chat_body, text_body):
        assert body["n"] == 3 and body["max_tokens"] == 50 and body["seed"] == 5
        assert body["temperature"] == 0.7 and "response_format" not in body
    assert chat.texts == [c["message"]["content"] for c in chat_answer(chat_body)["choices"]]
    assert text.texts == [c["text"] for c in text_answer(text_body)["choices"]]
    assert len(set(chat.texts)) == 3 and chat.finish_reasons == ["stop"] * 3
    assert chat.top_logprobs == [] and text.top_logprobs == []


def test_stop_and_max_tokens(serve: Callable[..., FaultServer]) -> None:
    srv = serve()
    [c] = backend(srv).generate([CHAT], GenParams(max_new_tokens=2, stop=("zzz",)))
    assert srv.bodies[0]["stop"] == ["zzz"]
    assert len(tokenize(c.text)) == 2 and c.finish_reasons == ["length"]


def test_json_schema_sent_as_response_format(serve: Callable[..., FaultServer]) -> None:
    srv = serve()
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    chat, text = backend(srv).generate([CHAT, TEXT], GenParams(json_schema=schema))
    expected = {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }
    assert all(b["response_format"] == expected for b in srv.bodies)
    assert "answer" in json.loads(chat.text) and "answer" in json.loads(text.text)


def test_top_logprobs_parsed(serve: Callable[..., FaultServer]) -> None:
    srv = serve()
    chat, text = backend(srv).generate([CHAT, TEXT], GenParams(top_logprobs=3))
    chat_body = next(b for b in srv.bodies if "messages" in b)
    text_body = next(b for b in srv.bodies if "prompt" in b)
    assert chat_body["logprobs"] is True and chat_body["top_logprobs"] == 3
    assert text_body["logprobs"] == 3
    for c in (chat, text):
        toks = tokenize(c.text)
        assert len(c.top_logprobs) == len(toks) > 0
        for tok, top in zip(toks, c.top_logprobs, strict=True):
            assert len(top) == 3 and top[tok] == pytest.approx(token_logprob(tok))


def test_score_sums_continuation_only(serve: Callable[..., FaultServer]) -> None:
    srv = serve()
    cases = [
        ("Question: is tea safe?\nAnswer:", " yes it is"),  # boundary on a token start
        ("Say abc", "def now"),  # "abcdef" straddles the boundary and is counted
        ("Nothing to add", ""),
    ]
    scores = backend(srv).score([p for p, _ in cases], [c for _, c in cases])
    want = [
        [" yes", " it", " is"],
        [" abcdef", " now"],
        [],
    ]
    for score, toks in zip(scores, want, strict=True):
        assert score.error is None and score.n_tokens == len(toks)
        assert score.logprob == pytest.approx(sum(token_logprob(t) for t in toks))
    assert sorted(b["prompt"] for b in srv.bodies) == sorted(p + c for p, c in cases)
    for body in srv.bodies:
        assert body["echo"] is True and body["logprobs"] == 1 and body["max_tokens"] == 1


def test_continuation_span_edges() -> None:
    # offsets of echoed tokens, then one generated token at offset 10 (== end)
    assert list(continuation_span([0, 3, 6, 10], 6, 10)) == [2]
    assert list(continuation_span([0, 3, 6, 10], 5, 10)) == [1, 2]  # 3..6 straddles 5
    assert list(continuation_span([0, 3, 3, 6, 10], 4, 10)) == [1, 2, 3]  # same-offset group
    assert list(continuation_span([0, 3, 6, 10], 10, 10)) == []


def test_score_rejects_chat_messages(serve: Callable[..., FaultServer]) -> None:
    srv = serve()
    with pytest.raises(BadInput, match="raw text prompt"):
        backend(srv).score([CHAT], [" yes"])
    assert srv.counts["total"] == 0


def test_chat_routing_switch(serve: Callable[..., FaultServer]) -> None:
    srv = serve()
    [c] = backend(srv, chat=True).generate([TEXT], GenParams())
    assert c.error is None and srv.counts["/v1/chat/completions"] == 1
    assert srv.bodies[0]["messages"] == [{"role": "user", "content": TEXT}]
    with pytest.raises(BadInput, match="chat: false"):
        backend(srv, chat=False).generate([CHAT], GenParams())


def test_429_honours_retry_after(serve: Callable[..., FaultServer]) -> None:
    srv = serve(script=["429"], retry_after="1")
    t0 = time.monotonic()
    [c] = backend(srv, backoff_max_s=2.0).generate([CHAT], GenParams())
    assert c.error is None and c.text
    assert time.monotonic() - t0 >= 0.95
    assert srv.counts["total"] == 2


def test_500_twice_then_success(serve: Callable[..., FaultServer]) -> None:
    srv = serve(script=["500", "500"])
    [c] = backend(srv).generate([TEXT], GenParams())
    assert c.error is None and c.text and srv.counts["total"] == 3


def test_timeout_is_not_sent_again_unless_asked(serve: Callable[..., FaultServer]) -> None:
    """The server may still be working on a timed-out request: sending it again would
    pay twice, so by default it is recorded as failed (a rerun asks again)."""
    srv = serve(script=["slow"], slow_s=3.0)
    t0 = time.monotonic()
    b = backend(srv, timeout_s=0.5)
    [c] = b.generate([CHAT], GenParams())
    assert c.error is not None and "timeout" in c.error and srv.counts["total"] == 1
    assert b.usage().attempts == 1 and b.usage().failed == 1
    srv2 = serve(script=["slow"], slow_s=3.0)
    [d] = backend(srv2, timeout_s=0.5, retry_timeouts=True).generate([CHAT], GenParams())
    assert d.error is None and d.text and srv2.counts["total"] == 2
    assert time.monotonic() - t0 < 3.5


def test_usage_counts_every_attempt_and_token(serve: Callable[..., FaultServer]) -> None:
    """What the client counts is what the server received (the bill can be checked)."""
    srv = serve(script=["500", "429", "500"], retry_after="0")
    b = backend(srv, max_retries=1, max_concurrency=1)
    out = b.generate([CHAT, TEXT, CHAT], GenParams())
    u = b.usage()
    assert u.attempts == srv.counts["total"] == 5 and u.retries == 2
    assert u.failed == sum(c.error is not None for c in out) == 1
    assert u.prompt_tokens == u.completion_tokens == 2  # 2 answers, the server reports 1 + 1


@pytest.mark.parametrize("status", ["401", "403"])
def test_rejected_key_stops_at_once_without_storing_it(serve: Callable[..., FaultServer],
                                                       status: str) -> None:  # fmt: skip
    srv = serve(default=status)
    b = OpenAIBackend("fault-model", base_url=srv.url, api_key="sk-live-SECRET1234567890",
                      **FAST)  # fmt: skip
    with pytest.raises(BadInput) as info:
        b.generate([f"p{i}" for i in range(10)], GenParams())
    msg = str(info.value)
    assert f"HTTP {status}" in msg and "key" in msg and "SECRET" not in msg and "\n" not in msg
    assert srv.counts["total"] <= b.max_concurrency  # stopped, not 10 x retries


def test_unknown_model_is_bad_input_before_any_call(serve: Callable[..., FaultServer]) -> None:
    srv = serve()
    with pytest.raises(BadInput, match="'nope' is not served at .*fault-model"):
        OpenAIBackend("nope", base_url=srv.url, **FAST).identity()
    srv404 = serve(default="404")
    with pytest.raises(BadInput, match="404 for model"):
        backend(srv404).generate([CHAT, CHAT], GenParams())


def test_error_bodies_are_redacted() -> None:
    from saferinstruct.llm.openai_http import redact

    assert "abc123secret" not in redact("header: Bearer abc123secret")
    assert "sk-proj-AAAA1111BBBB" not in redact("key sk-proj-AAAA1111BBBB echoed")
    assert redact('{"api_key": "hunter2hunter2"}') == '{"api_key": "[redacted]"}'
    assert redact("HTTP 500: injected failure") == "HTTP 500: injected failure"


@pytest.mark.parametrize("fault", ["garbage", "nochoices", "close"])
def test_malformed_or_closed_then_success(serve: Callable[..., FaultServer], fault: str) -> None:
    srv = serve(script=[fault])
    [c] = backend(srv).generate([CHAT], GenParams())
    assert c.error is None and c.text and srv.counts["total"] == 2


def test_malformed_every_time_is_recorded(serve: Callable[..., FaultServer]) -> None:
    srv = serve(default="nochoices")
    [c] = backend(srv, max_retries=2).generate([CHAT], GenParams())
    assert c.error is not None and "malformed" in c.error and srv.counts["total"] == 3


def test_4xx_is_not_retried(serve: Callable[..., FaultServer]) -> None:
    srv = serve(script=["400"])
    [c] = backend(srv).generate([CHAT], GenParams())
    assert c.error is not None and c.error.startswith("HTTP 400") and "\n" not in c.error
    assert srv.counts["total"] == 1


def test_one_prompt_always_failing(serve: Callable[..., FaultServer]) -> None:
    def poison(path: str, body: dict[str, Any]) -> str | None:
        return "500" if "POISON" in str(body.get("prompt")) else None

    srv = serve(rule=poison)
    prompts = [f"prompt {i}" for i in range(6)] + ["POISON pill"]
    out = backend(srv, max_retries=2, max_concurrency=3).generate(prompts, GenParams())
    assert all(c.error is None and c.text for c in out[:-1])
    assert out[-1].error is not None and "500" in out[-1].error and not out[-1].texts
    assert srv.counts["total"] == 6 + 3


def test_connection_refused_is_bad_input() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    t0 = time.monotonic()
    with pytest.raises(BadInput) as info:
        backend(url).generate([CHAT, TEXT, CHAT], GenParams())
    msg = str(info.value)
    assert msg.startswith(f"endpoint {url} is down") and "\n" not in msg
    assert time.monotonic() - t0 < 5


def test_failures_in_a_row_is_bad_input(serve: Callable[..., FaultServer]) -> None:
    srv = serve(default="500")
    b = backend(srv, max_retries=1, max_failures_in_row=3, max_concurrency=2)
    with pytest.raises(BadInput, match=r"is down: \d+ requests in a row failed"):
        b.generate([f"p{i}" for i in range(20)], GenParams())
    assert srv.counts["total"] < 20  # stopped early; only in-flight work finished


def test_success_resets_failures_in_a_row(serve: Callable[..., FaultServer]) -> None:
    srv = serve(script=["500", "500", "ok", "500", "500", "ok"])
    b = backend(srv, max_retries=0, max_failures_in_row=3, max_concurrency=1)
    out = b.generate([f"p{i}" for i in range(6)], GenParams())
    assert [c.error is None for c in out] == [False, False, True, False, False, True]


def test_forwarding_to_upstream(serve: Callable[..., FaultServer]) -> None:
    upstream = serve()
    front = serve(script=["500"], upstream=upstream.url)
    [c] = backend(front).generate([CHAT], GenParams())
    assert c.error is None and c.text.startswith("answer 0")
    assert front.counts["total"] == 2 and upstream.counts["total"] == 1
    [s] = backend(front).score(["Hello"], [" world"])
    assert s.logprob == pytest.approx(token_logprob(" world"))


def test_logs_carry_no_text(
    serve: Callable[..., FaultServer], caplog: pytest.LogCaptureFixture
) -> None:
    srv = serve(script=["500", "429"], retry_after="0")
    secret = "SECRET-hateful-prompt"
    with caplog.at_level(logging.DEBUG, logger="saferinstruct"):
        [c] = backend(srv, max_retries=0).generate([secret], GenParams())
        [d] = backend(srv, max_retries=1).generate([secret], GenParams())
    assert c.error and d.error is None and caplog.records
    assert secret not in caplog.text and d.text not in caplog.text


def test_a_server_still_starting_is_waited_for(serve: Callable[..., FaultServer]) -> None:
    """`wait_for_server_s`: connection refused until the server is up is waited out (a
    `vllm serve` takes minutes to start); without it, the endpoint is down at once."""
    import threading
    import time

    from saferinstruct.errors import EndpointDown

    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(EndpointDown, match="is down"):
        backend(url).identity()
    timer = threading.Timer(1.5, lambda: serve(port=port))
    start = time.monotonic()
    timer.start()
    try:
        assert backend(url, wait_for_server_s=30).identity() == "openai:fault-model"
    finally:
        timer.join()
    assert 1.5 <= time.monotonic() - start < 15
    with pytest.raises(EndpointDown, match=r"waited 0\.5 s"):
        backend(f"http://127.0.0.1:{free_port()}/v1", wait_for_server_s=0.5).identity()

"""A small fault-injecting OpenAI-protocol server for tests (real HTTP on 127.0.0.1).

It speaks `POST /v1/chat/completions`, `POST /v1/completions` and `GET /v1/models`.
Each request gets a behaviour: the first match of `rule(path, body)`, else the next entry
of `script` (consumed in arrival order), else `default`. Behaviours:

- "ok": a well-formed answer. Without `upstream`, a deterministic toy model: the text is
  derived from a hash of the request (asked for a verdict under a JSON schema, it says
  yes with score 5); tokens are `tokenize(text)` with log-prob
  `token_logprob(tok)`; `logprobs`/`top_logprobs`, `n`, `echo=True` (with `text_offset`)
  and `response_format` are honoured. With `upstream`, the request is forwarded there.
- "429": status 429 with `Retry-After: retry_after`.
- "500": status 500.                                  - "400": status 400 (not retryable).
- "401": status 401. The bodies of 401 and 500 echo the request's Authorization header
  (a careless server: the client must not store the key it sees there).
- "403", "404": those statuses.
- "slow": waits `slow_s` seconds, then answers "ok" (the client has usually given up).
- "garbage": 200 with a body that is not JSON.       - "nochoices": 200, JSON, no choices.
- "close": closes the connection without answering.

`counts` holds requests received, total ("total": the completion requests, what a
hosted API bills) and per path (`/v1/models` is counted there only); `bodies` the parsed
request bodies in arrival order; `peak_in_flight` the most completion requests it was
answering at once. `models` is what `GET /v1/models` lists.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Rule = Callable[[str, dict[str, Any]], str | None]
BEHAVIOURS = ("ok", "400", "401", "403", "404", "429", "500", "slow", "garbage", "nochoices",
              "close")  # fmt: skip
_TOKEN = re.compile(r"\s*\S+|\s+")


def tokenize(text: str) -> list[str]:
    """The toy tokenizer: each word with its leading whitespace (trailing space alone)."""
    return _TOKEN.findall(text)


def token_logprob(token: str) -> float:
    """The toy model's log-prob of a token: fixed, derived from its text."""
    h = int(hashlib.sha256(token.encode()).hexdigest()[:6], 16)
    return -0.05 * (1 + h % 40)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:8]


def _answer_text(body: dict[str, Any], i: int) -> str:
    """Deterministic generated text for choice `i`, cut to max_tokens and stop strings."""
    key = body.get("messages", body.get("prompt"))
    fmt = body.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") or {}
    if "verdict" in (schema.get("properties") or {}):  # a yes/no verdict (filter, judge)
        text = json.dumps({"verdict": "yes", "score": 5, "reason": "fits"})
    elif fmt.get("type") == "json_schema":
        text = json.dumps({"answer": _digest(key), "choice": i})
    else:
        text = f"answer {i} {_digest(key)} is here"
    for s in body.get("stop") or []:
        text = text.split(s)[0]
    return text


def _cut(text: str, max_tokens: int | None) -> tuple[str, str]:
    toks = tokenize(text)
    if max_tokens is not None and len(toks) > max_tokens:
        return "".join(toks[:max_tokens]), "length"
    return text, "stop"


def _alternatives(token: str, k: int) -> list[tuple[str, float]]:
    lp = token_logprob(token)
    return [(token, lp)] + [(f"<alt{j}>", lp - j) for j in range(1, k)]


def _chat_logprobs(text: str, k: int) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": t,
                "logprob": token_logprob(t),
                "bytes": list(t.encode()),
                "top_logprobs": [
                    {"token": a, "logprob": lp, "bytes": list(a.encode())}
                    for a, lp in _alternatives(t, k)
                ],
            }
            for t in tokenize(text)
        ]
    }


def _text_logprobs(prompt: str, text: str, k: int, echo: bool) -> dict[str, Any]:
    prompt_toks = tokenize(prompt) if echo else []
    toks = prompt_toks + tokenize(text)
    offsets, pos = [], 0
    for t in toks:
        offsets.append(pos)
        pos += len(t)
    lps: list[float | None] = [token_logprob(t) for t in toks]
    tops: list[dict[str, float] | None] = [dict(_alternatives(t, k)) for t in toks]
    if prompt_toks:
        lps[0], tops[0] = None, None
    return {"tokens": toks, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def chat_answer(body: dict[str, Any]) -> dict[str, Any]:
    choices = []
    for i in range(int(body.get("n") or 1)):
        text, finish = _cut(_answer_text(body, i), body.get("max_tokens"))
        choice: dict[str, Any] = {
            "index": i,
            "finish_reason": finish,
            "message": {"role": "assistant", "content": text},
        }
        if body.get("logprobs"):
            choice["logprobs"] = _chat_logprobs(text, int(body.get("top_logprobs") or 1))
        choices.append(choice)
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", ""),
        "choices": choices,
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def text_answer(body: dict[str, Any]) -> dict[str, Any]:
    prompt, echo = str(body.get("prompt", "")), bool(body.get("echo"))
    choices = []
    for i in range(int(body.get("n") or 1)):
        text, finish = _cut(_answer_text(body, i), body.get("max_tokens"))
        choice: dict[str, Any] = {
            "index": i,
            "finish_reason": finish,
            "text": prompt + text if echo else text,
            "logprobs": None,
        }
        if body.get("logprobs") is not None:
            choice["logprobs"] = _text_logprobs(prompt, text, int(body["logprobs"]), echo)
        choices.append(choice)
    return {
        "id": "cmpl-fault",
        "object": "text_completion",
        "created": 0,
        "model": body.get("model", ""),
        "choices": choices,
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class FaultServer:
    """Start with `start()` (or as a context manager); `url` is the base_url for clients."""

    def __init__(
        self,
        script: list[str] | None = None,
        default: str = "ok",
        rule: Rule | None = None,
        upstream: str | None = None,
        retry_after: str = "1",
        slow_s: float = 3.0,
        models: list[dict[str, Any]] | None = None,
        port: int = 0,
    ) -> None:
        for b in [*(script or []), default]:
            if b not in BEHAVIOURS:
                raise ValueError(f"unknown behaviour {b!r}")
        self.script, self.default, self.rule = list(script or []), default, rule
        self.upstream = upstream.rstrip("/") if upstream else None
        self.retry_after, self.slow_s, self.port = retry_after, slow_s, port
        self.models = models if models is not None else [{"id": "fault-model", "object": "model"}]
        self.counts: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []
        self.in_flight = self.peak_in_flight = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> FaultServer:
        handler = type("Handler", (_Handler,), {"fault": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def next_behaviour(self, path: str, body: dict[str, Any]) -> str:
        with self.lock:
            self.counts["total"] += 1
            self.counts[path] += 1
            self.bodies.append(body)
            chosen = self.rule(path, body) if self.rule else None
            if chosen is None:
                chosen = self.script.pop(0) if self.script else self.default
        return chosen

    def forward(self, path: str, raw: bytes, method: str) -> tuple[int, bytes]:
        """Send the request on to `upstream` and return its status and body."""
        assert self.upstream is not None
        suffix = path[len("/v1") :] if path.startswith("/v1") else path
        req = urllib.request.Request(
            self.upstream + suffix,
            data=raw if method == "POST" else None,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()


class _Handler(BaseHTTPRequestHandler):
    fault: FaultServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet in tests
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path.rstrip("/") != "/v1/models":
            self._send(404, {"error": {"message": "not found"}})
            return
        with self.fault.lock:
            self.fault.counts["/v1/models"] += 1
        if self.fault.upstream:
            self._raw(*self.fault.forward("/v1/models", b"", "GET"))
            return
        self._send(200, {"object": "list", "data": self.fault.models})

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.rstrip("/")
        if path not in ("/v1/chat/completions", "/v1/completions"):
            self._send(404, {"error": {"message": "not found"}})
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send(400, {"error": {"message": "body is not JSON"}})
            return
        with self.fault.lock:
            self.fault.in_flight += 1
            self.fault.peak_in_flight = max(self.fault.peak_in_flight, self.fault.in_flight)
        try:
            self._act(self.fault.next_behaviour(path, body), path, body, raw)
        finally:
            with self.fault.lock:
                self.fault.in_flight -= 1

    def _act(self, behaviour: str, path: str, body: dict[str, Any], raw: bytes) -> None:
        if behaviour == "close":
            self.close_connection = True
            return
        if behaviour == "429":
            self._send(
                429, {"error": {"message": "rate limited"}}, {"Retry-After": self.fault.retry_after}
            )
        elif behaviour == "400":
            self._send(400, {"error": {"message": "injected bad request"}})
        elif behaviour == "401":
            seen = self.headers.get("Authorization", "")
            self._send(401, {"error": {"message": f"invalid key in header: {seen}"}})
        elif behaviour in ("403", "404"):
            self._send(int(behaviour), {"error": {"message": f"injected {behaviour}"}})
        elif behaviour == "500":
            seen = self.headers.get("Authorization", "")
            self._send(500, {"error": {"message": f"injected failure (request had {seen})"}})
        elif behaviour == "garbage":
            self._raw(200, b"<html>this is not json", "text/html")
        elif behaviour == "nochoices":
            self._send(200, {"id": "x", "object": "chat.completion", "model": "m"})
        else:
            if behaviour == "slow" and self.fault.stopping.wait(self.fault.slow_s):
                return
            self._ok(path, body, raw)

    def _ok(self, path: str, body: dict[str, Any], raw: bytes) -> None:
        if self.fault.upstream:
            self._raw(*self.fault.forward(path, raw, "POST"))
        elif path == "/v1/chat/completions":
            self._send(200, chat_answer(body))
        else:
            self._send(200, text_answer(body))

    def _send(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._raw(status, json.dumps(obj).encode(), "application/json", headers)

    def _raw(
        self,
        status: int,
        data: bytes,
        ctype: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            self.close_connection = True

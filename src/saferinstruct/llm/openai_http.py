"""The OpenAI-compatible HTTP backend: vLLM, SGLang, TGI, llama.cpp server or a hosted API.

    from saferinstruct.llm.openai_http import OpenAIBackend
    from saferinstruct.llm.base import GenParams

    llm = OpenAIBackend("Qwen/Qwen2.5-7B-Instruct", base_url="http://127.0.0.1:8000/v1")
    [c] = llm.generate([[{"role": "user", "content": "Hi"}]], GenParams(max_new_tokens=32))
    print(c.text or c.error)

Prompts that are chat messages go to `POST /chat/completions` (the server applies the
chat template); raw text prompts go to `POST /completions`. `chat=True` sends every
prompt to the chat endpoint (a text prompt becomes one user message), for hosted APIs
without text completions; `chat=False` sends everything to text completions and rejects
message prompts.

`score()` uses text completions with `echo=True, logprobs=1, max_tokens=1` (as vLLM
serves them) and sums the log-probs of the echoed continuation tokens, found by their
`text_offset`. It needs raw text prompts: render the chat template yourself first.
Hosted APIs that lack log-probs, echo scoring, `n` or JSON schemas: turn those
capabilities off in the config (`logprobs=False`, `score=False`, ...).

Replicas: `base_url` may be a list of servers of the same model. Each request goes to
the one with the fewest in flight; one that fails (cannot connect, 5xx, 429, timeout) is
set aside for a while (2 s, doubling to 60 s) and tried again later, so the run finishes
on the others; all replicas share one cache identity (they must report the same weights).
For large fleets, put a router in front (vllm-router, sglang-router) and give its URL.

Failures: the SDK's own retries are off; each request is retried here on 429, 408, 409,
5xx, connection errors and malformed answers, with exponential backoff and full jitter,
honouring `Retry-After`. A request that timed out is not sent again in the same run (the
server may still be working on it, and would be paid twice; `retry_timeouts=True` to
allow it). A request still failing after its retries becomes a `Completion`/`Score` with
`error` set and the run goes on (the run counts them at the end). The run stops at once,
with `EndpointDown` (a `BadInput`, exit 2), when the endpoint is down (cannot connect
before any success, or `max_failures_in_row` requests failing in a row), rejects the key
(401, 403), or does not know the model (404 before any success). Error messages keep the
status and a redacted, one-line excerpt of the server's body (`redact`: no bearer tokens
or key-shaped strings). `usage()` counts every HTTP attempt, retry and token the server
reported, so the bill can be checked. Only counts and status codes are logged, never
prompt or answer text.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from ..config import ModelConfig
from ..errors import BadInput, EndpointDown
from ..progress import count, report_calls
from .base import Capabilities, Completion, GenParams, Message, Prompt, Score

log = logging.getLogger(__name__)

T = TypeVar("T")
OnAnswer = Callable[[int, Any], None]
"""Called with (index, answer) as each request of a batch succeeds (the cache stores it)."""
_RETRY_STATUS = (408, 409, 429)
_FATAL_STATUS = (401, 403)
_MAX_ERROR_CHARS = 300
_SECRETS = (
    re.compile(r"(?i)(bearer\s+)[^\s\"',;}]+"),
    re.compile(r"(?i)((?:api[-_]?key|authorization|x-api-key|token|secret|password)"
               r"[\"']?\s*[:=]\s*[\"']?)(?!bearer\b)[^\s\"',;}]+"),
    re.compile(r"()\b(?:sk|pk|rk|ghp|gho|hf|xox[abp])[-_][A-Za-z0-9_-]{8,}|\bAKIA[A-Z0-9]{12,}"),
)


def redact(text: str) -> str:
    """`text` with bearer tokens, key-shaped strings and `key: value` secrets masked."""
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: (m.group(1) or "") + "[redacted]", text)
    return text


@dataclass
class Usage:
    """What was sent and what the server reported, for checking the bill."""

    attempts: int = 0
    """HTTP requests sent (first tries and retries)."""
    retries: int = 0
    failed: int = 0
    """Requests that still failed after their retries."""
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: Usage) -> None:
        for f in ("attempts", "retries", "failed", "prompt_tokens", "completion_tokens"):
            setattr(self, f, getattr(self, f) + getattr(other, f))


class _Malformed(Exception):
    """The answer is not JSON or has no choices: retried like a 5xx."""


class _Unsupported(Exception):
    """A well-formed answer that lacks what we asked for (no echo log-probs): not retried."""


@dataclass
class _Verdict:
    """How to treat one failed attempt."""

    retry: bool
    message: str
    kind: str
    """Status code or exception class: the only thing that is logged."""
    wait_s: float | None = None
    unreachable: bool = False
    fatal: bool = False
    """Stop the run: the key or the model is rejected."""


SET_ASIDE_S = (2.0, 60.0)
"""A replica that failed is set aside this long (doubling per failure, up to the max)."""


@dataclass
class Replica:
    """One server of a role: its client, requests in flight, and when it may be used
    again after failing."""

    url: str
    client: Any = None
    in_flight: int = 0
    failures: int = 0
    down_until: float = 0.0
    ever_ok: bool = False


class _Run:
    """State shared by the requests of one batch: set `reason` to stop the batch."""

    def __init__(self) -> None:
        self.abort = threading.Event()
        self.reason: str | None = None
        self._lock = threading.Lock()

    def stop(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
        self.abort.set()


def _one_line(text: str) -> str:
    line = redact(" ".join(str(text).split()))
    return line if len(line) <= _MAX_ERROR_CHARS else line[: _MAX_ERROR_CHARS - 3] + "..."


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    return chain


def _cannot_connect(exc: BaseException) -> bool:
    """True when no connection could be made at all (refused, unknown host)."""
    return any(
        isinstance(e, ConnectionRefusedError) or type(e).__name__ == "ConnectError"
        for e in _cause_chain(exc)
    )


def _retry_after(headers: Any, cap: float) -> float | None:
    """Seconds from `Retry-After` (or `retry-after-ms`), capped; None when absent."""
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return min(max(float(ms) / 1000.0, 0.0), cap)
        sec = headers.get("retry-after")
        if sec is not None:
            return min(max(float(sec), 0.0), cap)
    except (TypeError, ValueError):  # an HTTP date or junk: use our own backoff
        return None
    return None


def _load_json(content: bytes) -> dict[str, Any]:
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Malformed(f"answer is not JSON ({len(content)} bytes)") from exc
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise _Malformed("answer has no choices")
    if not data["choices"]:
        raise _Malformed("answer has an empty choices list")
    return data


def _parsed(parse: Callable[..., T], *args: Any) -> T:
    """Run a parser; a missing or mistyped field makes the answer malformed."""
    try:
        return parse(*args)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise _Malformed(f"unexpected answer shape ({type(exc).__name__})") from exc


def _choices(data: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(data["choices"], key=lambda c: c.get("index", 0))


def _chat_top_logprobs(choice: dict[str, Any]) -> list[dict[str, float]]:
    content = (choice.get("logprobs") or {}).get("content") or []
    return [
        {t["token"]: float(t["logprob"]) for t in item.get("top_logprobs") or []}
        for item in content
    ]


def _text_top_logprobs(choice: dict[str, Any]) -> list[dict[str, float]]:
    tops = (choice.get("logprobs") or {}).get("top_logprobs") or []
    return [{k: float(v) for k, v in (d or {}).items()} for d in tops]


def _parse_chat(data: dict[str, Any]) -> Completion:
    choices = _choices(data)
    return Completion(
        texts=[(c.get("message") or {}).get("content") or "" for c in choices],
        finish_reasons=[c.get("finish_reason") or "" for c in choices],
        top_logprobs=_chat_top_logprobs(choices[0]),
    )


def _parse_text(data: dict[str, Any]) -> Completion:
    choices = _choices(data)
    return Completion(
        texts=[c.get("text") or "" for c in choices],
        finish_reasons=[c.get("finish_reason") or "" for c in choices],
        top_logprobs=_text_top_logprobs(choices[0]),
    )


def continuation_span(offsets: list[int], split: int, end: int) -> range:
    """Indices of the echoed tokens that cover text[split:end].

    Tokens starting at or after `end` were generated, not echoed. A token that starts
    before `split` but runs past it (prompt and continuation merged) is counted.
    """
    n_echoed = sum(1 for o in offsets if o < end)
    if split >= end:
        return range(n_echoed, n_echoed)
    start = next((i for i in range(n_echoed) if offsets[i] >= split), n_echoed)
    if start > 0 and (start == n_echoed or offsets[start] > split):
        straddler = offsets[start - 1]
        start = next(i for i in range(start) if offsets[i] == straddler)
    return range(start, n_echoed)


def _parse_score(data: dict[str, Any], split: int, end: int) -> Score:
    lp = _choices(data)[0].get("logprobs") or {}
    offsets, values = lp.get("text_offset"), lp.get("token_logprobs")
    if not offsets or not values or len(offsets) != len(values):
        raise _Unsupported("server returned no echoed prompt log-probs (turn `score` off)")
    picked = [values[i] for i in continuation_span(offsets, split, end)]
    real = [float(v) for v in picked if v is not None]
    return Score(logprob=sum(real), n_tokens=len(real))


_ROLE = ModelConfig(backend="openai")
"""An endpoint role's settings as `ModelConfig` declares them: the one owner of the
defaults below (a backend built from a role passes every one: `from_config`)."""


class OpenAIBackend:
    """A model served behind an OpenAI-compatible HTTP API (see the module docstring)."""

    kind = "openai"
    streams_answers = True
    """generate/score take `on_answer`: the cache stores each answer as it arrives."""

    def __init__(
        self,
        model: str,
        base_url: str | list[str] | None = None,
        api_key: str | None = None,
        api_key_env: str = _ROLE.api_key_env,
        max_concurrency: int = _ROLE.max_concurrency,
        max_retries: int = _ROLE.max_retries,
        timeout_s: float = _ROLE.timeout_s,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 20.0,
        max_failures_in_row: int = _ROLE.max_failures_in_row,
        logprobs: bool = _ROLE.supports_logprobs,
        score: bool = _ROLE.supports_score,
        n: bool = True,
        json_schema: bool = _ROLE.supports_json_schema,
        chat: bool | None = None,
        retry_timeouts: bool = _ROLE.retry_timeouts,
        revision: str | None = None,
        wait_for_server_s: float = _ROLE.wait_for_server_s,
    ) -> None:
        self.model = model
        default = os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        urls = base_url if isinstance(base_url, list) else [base_url or default]
        if not urls:
            raise BadInput(f"model {model!r}: base_url is an empty list")
        self.replicas = [Replica(u.rstrip("/")) for u in urls]
        self.base_url = self.replicas[0].url if len(urls) == 1 else " | ".join(urls)
        self._api_key = api_key or os.environ.get(api_key_env) or "EMPTY"
        self.max_concurrency = max(1, int(max_concurrency))
        self.max_retries = max(0, int(max_retries))
        self.timeout_s = float(timeout_s)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.max_failures_in_row = max(1, int(max_failures_in_row))
        self.chat = chat
        self.retry_timeouts = retry_timeouts
        self.revision = revision
        self.wait_for_server_s = max(0.0, float(wait_for_server_s))
        self._identity: str | None = None
        self._caps = Capabilities(logprobs=logprobs, score=score, n=n, json_schema=json_schema)
        self._lock = threading.Lock()
        self._fails_in_row = 0
        self._ever_ok = False
        self._usage = Usage()
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    def from_config(cls, cfg: ModelConfig, api_key: str | None = None) -> OpenAIBackend:
        """The backend of an endpoint role (`cfg`), with its key."""
        return cls(
            model=cfg.model, base_url=cfg.base_url, api_key=api_key,
            api_key_env=cfg.api_key_env, max_concurrency=cfg.max_concurrency,
            max_retries=cfg.max_retries, timeout_s=cfg.timeout_s,
            max_failures_in_row=cfg.max_failures_in_row,
            wait_for_server_s=cfg.wait_for_server_s, logprobs=cfg.supports_logprobs,
            score=cfg.supports_score, json_schema=cfg.supports_json_schema,
            retry_timeouts=cfg.retry_timeouts, revision=cfg.revision,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r})"

    # -- protocol ----------------------------------------------------------------------

    def identity(self) -> str:
        """`openai:<name>` plus what the server reports about the model at `/models`
        (`root`, `parent`, `max_model_len`, `owned_by`: vLLM and our `serve` report the
        weights behind the name there) and the configured `revision`; asked once. Not
        `created`: vLLM and SGLang stamp it at request time. An endpoint that is down,
        rejects the key or does not serve the model is `BadInput` here, before any call;
        one without `/models` is identified by the name (and `revision`) alone."""
        with self._lock:
            if self._identity is not None:
                return self._identity
        info = self._model_info()
        parts = [f"openai:{self.model}"]
        parts += [f"{k}={info[k]}" for k in ("root", "parent", "max_model_len", "owned_by")
                  if info.get(k) not in (None, "")]  # fmt: skip
        if self.revision:
            parts.append(f"revision={self.revision}")
        with self._lock:
            self._identity = "|".join(parts)
        return self._identity

    def _model_info(self) -> dict[str, Any]:
        """This model's entry in `GET /models` of every replica that answers ({} when
        they have no such list); replicas serving other weights are BadInput, replicas
        that are down are set aside, all of them down is EndpointDown."""
        deadline = time.monotonic() + self.wait_for_server_s
        while True:
            infos, down = [], []
            for replica in self.replicas:
                info = self._replica_model_info(replica)
                (down if info is None else infos).append(replica.url if info is None else info)
            left = deadline - time.monotonic()
            if infos or left <= 0:
                break
            log.info("openai: %s does not answer yet; waiting (%.0f s left)", self.base_url, left)
            time.sleep(min(2.0, left))
        if not infos:
            waited = f" (waited {self.wait_for_server_s:g} s)" if self.wait_for_server_s else ""
            raise EndpointDown(f"endpoint {self.base_url} is down: cannot connect{waited}")
        roots = {json.dumps({k: i.get(k) for k in ("root", "parent", "max_model_len")},
                            sort_keys=True) for i in infos}  # fmt: skip
        if len(roots) > 1:
            raise BadInput(f"the replicas of {self.model!r} serve different weights "
                           f"({self.base_url}): one role, one model")  # fmt: skip
        if down:
            log.warning("openai: %d of %d replicas do not answer; set aside for now",
                        len(down), len(self.replicas))  # fmt: skip
        return infos[0]

    def _replica_model_info(self, replica: Replica) -> dict[str, Any] | None:
        """One replica's entry for this model; None when it cannot be reached."""
        import openai

        try:
            raw = self._client(replica).models.with_raw_response.list()
            data = json.loads(raw.content)
        except openai.APIStatusError as exc:
            if exc.status_code in _FATAL_STATUS:
                raise BadInput(self._classify(exc).message) from None
            log.warning("openai: %s has no model list (HTTP %d): the cache identity is the "
                        "served name alone; set `revision` when the model behind it changes",
                        replica.url, exc.status_code)  # fmt: skip
            return {}
        except (openai.APIConnectionError, openai.APITimeoutError):
            replica.down_until = time.monotonic() + SET_ASIDE_S[0]
            return None
        except ValueError:
            return {}
        entries = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            return {}
        for entry in entries:
            if isinstance(entry, dict) and entry.get("id") == self.model:
                return entry
        served = ", ".join(str(e.get("id")) for e in entries[:10] if isinstance(e, dict))
        raise BadInput(f"model {self.model!r} is not served at {replica.url} "
                       f"(it serves: {served or 'nothing'})")  # fmt: skip

    def capabilities(self) -> Capabilities:
        return self._caps

    def usage(self) -> Usage:
        """A copy of the counts so far (attempts, retries, failed, tokens)."""
        with self._lock:
            return Usage(**asdict(self._usage))

    def generate(self, prompts: list[Prompt], params: GenParams,
                 on_answer: OnAnswer | None = None) -> list[Completion]:  # fmt: skip
        """One request per prompt; `on_answer(i, completion)` as each one succeeds."""
        routes = [self._route(p) for p in prompts]
        return self._answers(lambda i: self._sender(routes[i], params, i), len(prompts),
                             lambda error: Completion(error=error), on_answer)  # fmt: skip

    def score(self, prompts: list[Prompt], continuations: list[str],
              on_answer: OnAnswer | None = None) -> list[Score]:  # fmt: skip
        if len(prompts) != len(continuations):
            raise ValueError("score() needs one continuation per prompt")
        for p in prompts:
            if not isinstance(p, str):
                raise BadInput(
                    "scoring over HTTP needs a raw text prompt (render the chat template "
                    "first); chat messages cannot be scored with /completions echo"
                )
        return self._answers(lambda i: self._score_sender(str(prompts[i]), continuations[i]),
                             len(prompts), lambda error: Score(error=error), on_answer)  # fmt: skip

    # -- requests ----------------------------------------------------------------------

    def _route(self, prompt: Prompt) -> str | list[Message]:
        """The prompt as chat messages (chat endpoint) or text (completions endpoint)."""
        if isinstance(prompt, str):
            return [{"role": "user", "content": prompt}] if self.chat else prompt
        if self.chat is False:
            raise BadInput(
                f"backend {self.identity()} is set to chat: false (text completions) but "
                "got chat messages; render the chat template or set chat: true"
            )
        return list(prompt)

    def _sender(self, route: str | list[Message], params: GenParams,
                index: int) -> Callable[[], Completion]:  # fmt: skip
        """The request for prompt `index` (with its own seed)."""
        if isinstance(route, str):
            return self._text_sender(route, params, index)
        return self._chat_sender(route, params, index)

    def _client(self, replica: Replica) -> Any:
        with self._lock:
            if replica.client is None:
                import openai

                replica.client = openai.OpenAI(
                    base_url=replica.url,
                    api_key=self._api_key,
                    max_retries=0,
                    timeout=self.timeout_s,
                )
            return replica.client

    def _pick(self) -> Replica:
        """The replica to send to: the fewest requests in flight among those not set
        aside (all set aside: the one that comes back first); it is counted in flight."""
        with self._lock:
            now = time.monotonic()
            ready = [r for r in self.replicas if r.down_until <= now]
            pool = ready or [min(self.replicas, key=lambda r: r.down_until)]
            replica = min(pool, key=lambda r: r.in_flight)
            replica.in_flight += 1
            return replica

    def _done(self, replica: Replica, verdict: _Verdict | None) -> None:
        """A request to `replica` finished: ok (None), or failed as `verdict` says (a
        failure that says the server is unwell sets it aside, longer each time)."""
        with self._lock:
            replica.in_flight -= 1
            if verdict is None:
                replica.failures, replica.down_until, replica.ever_ok = 0, 0.0, True
            elif len(self.replicas) > 1 and (verdict.unreachable or verdict.retry):
                replica.failures += 1
                wait = min(SET_ASIDE_S[1], SET_ASIDE_S[0] * 2 ** (replica.failures - 1))
                replica.down_until = time.monotonic() + wait

    def _common(self, params: GenParams, index: int) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "model": self.model,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": params.seed_of(index),
        }
        if params.stop:
            kw["stop"] = list(params.stop)
        if params.n != 1:
            kw["n"] = params.n
        return kw

    @staticmethod
    def _response_format(schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema, "strict": True},
        }

    def _chat_sender(self, messages: list[Message], params: GenParams,
                     index: int) -> Callable[[], Completion]:  # fmt: skip
        kw = self._common(params, index)
        if params.json_schema is not None:
            kw["response_format"] = self._response_format(params.json_schema)
        if params.top_logprobs > 0:
            kw.update(logprobs=True, top_logprobs=params.top_logprobs)

        def send(client: Any) -> Completion:
            raw = client.chat.completions.with_raw_response.create(messages=messages, **kw)
            return self._counted(_parse_chat, _load_json(raw.content))

        return send

    def _text_sender(self, prompt: str, params: GenParams,
                     index: int) -> Callable[[], Completion]:  # fmt: skip
        kw = self._common(params, index)
        if params.json_schema is not None:
            kw["extra_body"] = {"response_format": self._response_format(params.json_schema)}
        if params.top_logprobs > 0:
            kw["logprobs"] = params.top_logprobs

        def send(client: Any) -> Completion:
            raw = client.completions.with_raw_response.create(prompt=prompt, **kw)
            return self._counted(_parse_text, _load_json(raw.content))

        return send

    def _score_sender(self, prompt: str, continuation: str) -> Callable[[], Score]:
        full = prompt + continuation

        def send(client: Any) -> Score:
            raw = client.completions.with_raw_response.create(
                model=self.model,
                prompt=full,
                echo=True,
                logprobs=1,
                max_tokens=1,
                temperature=0.0,
            )
            return self._counted(_parse_score, _load_json(raw.content), len(prompt), len(full))

        return send

    def _counted(self, parse: Callable[..., T], data: dict[str, Any], *args: Any) -> T:
        """Parse an answer and add the server's token counts (`usage`) to ours."""
        result = _parsed(parse, data, *args)
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        with self._lock:
            for key in ("prompt_tokens", "completion_tokens"):
                value = usage.get(key)
                if isinstance(value, int):
                    setattr(self._usage, key, getattr(self._usage, key) + value)
                    setattr(result, key, value)  # the answer's own, kept in the cache
                    count(key, value)
        return result

    # -- concurrency, retries, dead endpoints ------------------------------------------

    def _answers(self, sender: Callable[[int], Callable[[Any], T]], count: int,
                 failed: Callable[[str], T], on_answer: OnAnswer | None) -> list[T]:  # fmt: skip
        """Send request `sender(i)` for every index (retried, counted); `failed(error)` where
        none succeeded; `on_answer(i, answer)` as each one succeeds."""

        def one(i: int, run: _Run) -> T:
            result, error = self._with_retries(sender(i), run)
            report_calls(1)
            if result is None:
                return failed(error)
            if on_answer is not None:
                on_answer(i, result)
            return result

        return self._map(one, count)

    def _map(self, one: Callable[[int, _Run], T], count: int) -> list[T]:
        """Run `one(i)` for every index with bounded concurrency; raise if the endpoint died."""
        if count == 0:
            return []
        run = _Run()
        pool = self._pool()
        futures = [pool.submit(contextvars.copy_context().run, one, i, run) for i in range(count)]
        results = [f.result() for f in futures]
        if run.reason is not None:
            finished = {i: r for i, r in enumerate(results) if getattr(r, "error", "x") is None}
            raise EndpointDown(run.reason, finished)
        n_err = sum(1 for r in results if getattr(r, "error", None))
        log.debug("openai: %d requests, %d failed after retries", count, n_err)
        return results

    def _pool(self) -> ThreadPoolExecutor:
        """The role's request threads, `max_concurrency` of them, shared by every call (and
        so by stages running at once): the bound on requests in flight."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.max_concurrency,
                                                    thread_name_prefix="saferinstruct-openai")
            return self._executor

    def _with_retries(self, send: Callable[[Any], T], run: _Run) -> tuple[T | None, str]:
        """(result, "") on success, else (None, one-line error). Each attempt goes to the
        replica `_pick` chooses, so a retry moves to a healthy one."""
        verdict = _Verdict(False, "not sent: batch stopped", "aborted")
        for attempt in range(self.max_retries + 1):
            if run.abort.is_set():
                return None, "not sent: endpoint is down"
            with self._lock:
                self._usage.attempts += 1
                self._usage.retries += attempt > 0
            count("http_attempts")
            count("http_retries", int(attempt > 0))
            replica = self._pick()
            try:
                result = send(self._client(replica))
            except Exception as exc:  # noqa: BLE001 - classified below, bugs re-raised
                verdict = self._classify(exc)
                self._done(replica, verdict)
            else:
                self._done(replica, None)
                self._note_success()
                return result, ""
            if verdict.unreachable and not self._ever_ok and self._all_set_aside():
                run.stop(f"endpoint {self.base_url} is down: cannot connect: {verdict.message}")
                return None, verdict.message
            if verdict.fatal or (verdict.kind == "404" and not self._ever_ok):
                run.stop(verdict.message)
                return None, verdict.message
            if not verdict.retry or attempt == self.max_retries:
                break
            delay = self._delay(attempt, verdict)
            log.info(
                "openai: attempt %d/%d failed (%s); retrying in %.2fs",
                attempt + 1,
                self.max_retries + 1,
                verdict.kind,
                delay,
            )
            if run.abort.wait(delay):
                return None, "not sent: endpoint is down"
        self._note_failure(run, verdict)
        return None, verdict.message

    def _all_set_aside(self) -> bool:
        """With one server: it failed. With replicas: none is ready to take a request."""
        if len(self.replicas) == 1:
            return True
        with self._lock:
            now = time.monotonic()
            return all(r.down_until > now for r in self.replicas)

    def _delay(self, attempt: int, verdict: _Verdict) -> float:
        if verdict.wait_s is not None:
            return verdict.wait_s
        return min(self.backoff_max_s, self.backoff_base_s * 2**attempt) * random.random()

    def _classify(self, exc: Exception) -> _Verdict:
        """How to treat a failed attempt; its message never carries our key."""
        verdict = self._classify_raw(exc)
        if len(self._api_key) >= 4 and self._api_key != "EMPTY":
            verdict.message = verdict.message.replace(self._api_key, "[redacted]")
        return verdict

    def _classify_raw(self, exc: Exception) -> _Verdict:
        import openai

        if isinstance(exc, _Malformed):
            return _Verdict(True, f"malformed answer: {exc}", "malformed")
        if isinstance(exc, _Unsupported):
            return _Verdict(False, str(exc), "unsupported")
        if isinstance(exc, openai.APIStatusError):
            code = exc.status_code
            retry = code in _RETRY_STATUS or code >= 500
            wait = _retry_after(exc.response.headers, self.backoff_max_s)
            message = _one_line(f"HTTP {code}: {exc.message}")
            if code in _FATAL_STATUS:
                message = (f"{self.base_url} rejected the request (HTTP {code}): check the "
                           "API key (api_key_env) and that it may use model "
                           f"{self.model!r}")  # fmt: skip
            elif code == 404 and not self._ever_ok:
                message = (f"{self.base_url} answered 404 for model {self.model!r}: "
                           "check the model name and base_url")  # fmt: skip
            return _Verdict(retry, message, str(code), wait, fatal=code in _FATAL_STATUS)
        if isinstance(exc, openai.APITimeoutError):
            message = f"timeout after {self.timeout_s:g}s"
            if not self.retry_timeouts:
                message += " (not sent again: the server may still be working on it)"
            return _Verdict(self.retry_timeouts, message, "timeout")
        if isinstance(exc, openai.APIConnectionError):
            root = _cause_chain(exc)[-1]
            msg = _one_line(f"{type(exc).__name__}: {type(root).__name__}: {root}")
            return _Verdict(True, msg, type(root).__name__, unreachable=_cannot_connect(exc))
        if isinstance(exc, openai.APIResponseValidationError):
            return _Verdict(True, "malformed answer: invalid response", "malformed")
        raise exc

    def _note_success(self) -> None:
        with self._lock:
            self._fails_in_row = 0
            self._ever_ok = True

    def _note_failure(self, run: _Run, verdict: _Verdict) -> None:
        with self._lock:
            self._fails_in_row += 1
            count = self._fails_in_row
            if count >= self.max_failures_in_row:
                self._fails_in_row = 0
        with self._lock:
            self._usage.failed += 1
        log.warning("openai: request failed after retries (%s); %d in a row", verdict.kind, count)
        if count >= self.max_failures_in_row:
            run.stop(f"endpoint {self.base_url} is down: {count} requests in a row failed; "
                     f"last: {verdict.message}")  # fmt: skip

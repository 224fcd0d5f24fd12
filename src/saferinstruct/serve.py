"""`safer-instruct serve`: the local backend behind a small OpenAI-compatible HTTP server.

It serves one local model (`embedded` or a local HF directory) over the real OpenAI
protocol, with real generations only (nothing canned). Use it wherever a pipeline
expects an OpenAI-compatible endpoint and no GPU server is at hand:

    safer-instruct serve --model embedded --port 8000
    # then: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="EMPTY")

In Python: `serve(ModelConfig(model="embedded"), port=8000)` loads the model, then runs
uvicorn;
`create_app(LocalBackend("embedded"), "embedded")` builds the app without loading.

Endpoints:

- `GET /v1/models` (and `/v1/models/{id}`): the one served model; its `root` is the
  model's identity (path and content hash), which clients use as their cache key.
- `POST /v1/chat/completions`: `messages`, `temperature` (default 1), `top_p`,
  `max_tokens` / `max_completion_tokens` (default 256), `stop` (str or list), `seed`,
  `n`, `logprobs` + `top_logprobs` (every choice), `response_format` (`json_schema`,
  `json_object`, `text`).
- `POST /v1/completions`: `prompt` (str or list of str) with the same fields (default
  `max_tokens` 16), `logprobs` (int) -> `{tokens, token_logprobs, top_logprobs,
  text_offset}` (offsets into the choice's `text`), `echo` (the prompt's own token
  log-probs; the first is None), so `echo=True, max_tokens=0 or 1` scores a continuation.
- `GET /stats`: requests received, total and per path (`/stats` itself is not counted),
  and the number of `generate()` batches run.
- `GET /health`.

It binds 127.0.0.1 unless told otherwise; with an API key (`--api-key-env NAME`: the key
is read from that environment variable), every path but `/health` needs
`Authorization: Bearer <key>`, else 401.

Errors use the OpenAI format `{"error": {"message", "type", "param", "code"}}`: an
unknown model is 404, a bad body is 400 (also `stream: true`: streaming is not
supported), a failed generation is 500.

Model work runs on one worker thread (the model is not thread-safe). Generation requests
arriving within ~10 ms of each other with the same settings go to one `generate()` call,
and a batch waits (up to 0.25 s) for the clients the last batch answered to send their
next request, so clients with many requests in flight keep the batches full; each
request's answer is built in the same turn as its generation.

Limitations:

- Log-probs are teacher-forced: the returned text is tokenized again and scored by one
  forward pass under the raw model distribution (temperature 1, no top-p, no JSON-schema
  mask). For greedy decoding this is exactly what decoding saw, except in the rare case
  where re-tokenizing the text gives other tokens than the ones generated.
- With sampling, each request samples with its own `seed` (its own random stream, see
  `llm/local.py`), so the same seeded request gives the same answer whatever else shares
  its batch. Without a `seed`, sampling requests get a random one. Greedy results do
  not depend on seeds.
- `top_logprobs` of text completions is a dict keyed by token text, so tokens with the
  same text (partial UTF-8 characters all decode to U+FFFD) share one entry; the chat
  endpoint lists every token with its `bytes`.
- No streaming, no token-id prompts, no tools; `frequency_penalty`, `presence_penalty`,
  `logit_bias`, `user` and other fields are ignored. Prompts longer than the model's
  context fail with 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .config import ModelConfig
from .llm.base import Completion, GenParams, Message, Prompt

if TYPE_CHECKING:
    from .llm.local import LocalBackend

log = logging.getLogger("saferinstruct")

CHAT_DEFAULT_MAX_TOKENS = 256
TEXT_DEFAULT_MAX_TOKENS = 16
BATCH_WINDOW_S = 0.01
REJOIN_S = 0.25
"""How long a batch waits, at most, for the clients the last batch answered to ask again
(a client with requests in flight sends its next one as soon as an answer arrives)."""
MAX_BATCH = 256
MAX_TOP_LOGPROBS = 20


# -- errors ---------------------------------------------------------------------------
class ApiError(Exception):
    """An error answered in the OpenAI format."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = (
            status,
            message,
            kind,
            code,
            param,
        )


def error_response(err: ApiError) -> JSONResponse:
    body = {"message": err.message, "type": err.kind, "param": err.param, "code": err.code}
    return JSONResponse({"error": body}, status_code=err.status)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{loc}: {e.get('msg', 'invalid')}" if loc else str(e.get("msg")))
    return "invalid request: " + "; ".join(parts)


# -- request bodies -------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=128)
    response_format: dict[str, Any] | None = None
    stream: bool | None = False


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class ChatRequest(_Body):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)


class TextRequest(_Body):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool | None = False


# -- request -> GenParams -------------------------------------------------------------
def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    items = [stop] if isinstance(stop, str) else list(stop or [])
    return tuple(s for s in items if s)


def _check_schema(schema: dict[str, Any]) -> None:
    """400 when llguidance cannot compile the schema (skipped when it is not installed)."""
    try:
        import llguidance
    except ImportError:
        return
    try:
        grammar = llguidance.grammar_from("json_schema", json.dumps(schema))
        problem = llguidance.LLMatcher.validate_grammar(grammar)
    except Exception as exc:  # noqa: BLE001 - any failure means the schema is unusable
        problem = str(exc) or type(exc).__name__
    if problem:
        raise ApiError(400, f"invalid JSON schema: {problem}", param="response_format")


def json_schema_of(fmt: dict[str, Any] | None) -> dict[str, Any] | None:
    """The schema a `response_format` asks for (`json_object` -> any object)."""
    kind = (fmt or {}).get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind != "json_schema":
        raise ApiError(400, f"unsupported response_format type {kind!r}", param="response_format")
    spec = (fmt or {}).get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise ApiError(
            400, "response_format.json_schema.schema must be an object", param="response_format"
        )
    _check_schema(schema)
    return schema


def gen_params(body: _Body, max_tokens: int) -> GenParams:
    """OpenAI sampling fields -> GenParams (temperature defaults to 1, as OpenAI's)."""
    temperature = 1.0 if body.temperature is None else body.temperature
    seed = body.seed
    if seed is None:
        seed = 0 if temperature == 0 else random.randrange(2**31)
    return GenParams(
        temperature=temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        max_new_tokens=max_tokens,
        stop=_stops(body.stop),
        seed=seed,
        n=body.n,
        json_schema=json_schema_of(body.response_format),
    )


def _message(m: ChatMessage) -> Message:
    if isinstance(m.content, list):
        if any(p.type != "text" for p in m.content):
            raise ApiError(400, "only text content parts are supported", param="messages")
        content = "".join(p.text or "" for p in m.content)
    else:
        content = m.content or ""
    return {"role": "system" if m.role == "developer" else m.role, "content": content}


# -- the model worker -----------------------------------------------------------------
@dataclass
class _Job:
    future: Future[Any]
    prompt: Prompt | None = None
    params: GenParams | None = None
    fn: Callable[[], Any] | None = None
    then: Callable[[Completion], Any] | None = None
    """Turns the generation into the request's answer on the model thread, in the same
    turn (a second trip through the queue would wait behind the next batch)."""


def _params_key(params: GenParams) -> str:
    """Requests that can share one generate() call: the same settings but the seed (each
    keeps its own, see `_generate`)."""
    key = params.key()
    del key["seed"]
    return json.dumps(key, sort_keys=True)


class ModelWorker:
    """Runs all model work on one thread; batches generations with the same settings."""

    def __init__(self, backend: LocalBackend, window_s: float = BATCH_WINDOW_S,
                 rejoin_s: float = REJOIN_S) -> None:  # fmt: skip
        self.backend = backend
        self.window_s, self.rejoin_s = window_s, rejoin_s
        self.batches = 0
        self._expected = 0  # requests of the last batch's time: waiting, or answered by it
        self._done_at = 0.0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="saferinstruct-serve-model", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=60)

    def generate(self, prompt: Prompt, params: GenParams,
                 then: Callable[[Completion], Any] | None = None) -> Future[Any]:  # fmt: skip
        """The completion, or `then(completion)` when given."""
        return self._submit(_Job(Future(), prompt=prompt, params=params, then=then))

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        return self._submit(_Job(Future(), fn=fn))

    def _submit(self, job: _Job) -> Future[Any]:
        self.start()
        self._queue.put(job)
        return job.future

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, done = self._collect(first)
            self._run(batch)
            if done:
                return

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """`first` plus whatever arrives within the batch window of the one before, and
        until the clients the last batch answered are back (up to `rejoin_s` in all):
        without that wait, clients with requests in flight fall out of step, batches
        alternate between a few requests and the rest, and the model runs half-empty
        batches. True when told to stop."""
        batch = [first]
        start = last = time.monotonic()
        recent = start - self._done_at <= self.rejoin_s  # else those clients have gone
        expected = self._expected if recent else 1 + self._queue.qsize()
        while len(batch) < MAX_BATCH:
            # until the expected clients are back; then while requests keep arriving
            # within the window of each other, never past rejoin_s in all
            until = start + self.rejoin_s
            if len(batch) >= expected:
                until = min(until, last + self.window_s)
            left = until - time.monotonic()
            if left <= 0:
                break
            try:
                job = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if job is None:
                return batch, True
            batch.append(job)
            last = time.monotonic()
        return batch, False

    def _run(self, batch: list[_Job]) -> None:
        live = [j for j in batch if j.future.set_running_or_notify_cancel()]
        groups: dict[str, list[_Job]] = {}
        for job in live:
            if job.params is not None:
                groups.setdefault(_params_key(job.params), []).append(job)
        done = [(jobs, self._generate(jobs)) for jobs in groups.values()]
        # what arrived while the model ran, plus the clients about to be answered
        self._expected = self._queue.qsize() + len(live)
        for jobs, outs in done:
            for job, out in zip(jobs, outs, strict=True):
                if isinstance(out, BaseException):
                    job.future.set_exception(out)
                elif job.then is not None:
                    _settle(job.future, lambda job=job, out=out: job.then(out))
                else:
                    job.future.set_result(out)
        for job in live:
            if job.fn is not None:
                _settle(job.future, job.fn)
        self._done_at = time.monotonic()

    def _generate(self, jobs: list[_Job]) -> list[Completion | BaseException]:
        """One generate() call for jobs with the same settings: each job's answer, or the
        exception for all of them."""
        from dataclasses import replace

        first = jobs[0].params
        assert first is not None
        params = replace(first, seeds=tuple(j.params.seed for j in jobs))  # type: ignore[union-attr]
        try:
            outs = self.backend.generate([j.prompt for j in jobs], params)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - handed to the waiting requests
            log.warning("serve: generate failed: %s", type(exc).__name__)
            return [exc] * len(jobs)
        self.batches += 1
        return list(outs)


def _settle(future: Future[Any], fn: Callable[[], Any]) -> None:
    try:
        future.set_result(fn())
    except Exception as exc:  # noqa: BLE001 - handed to the waiting request
        future.set_exception(exc)


async def _wait(future: Future[Any]) -> Any:
    try:
        return await asyncio.wrap_future(future)
    except ApiError:
        raise
    except Exception as exc:  # noqa: BLE001 - a model failure is a 500 for this request
        raise ApiError(500, f"model error: {type(exc).__name__}: {exc}", "server_error") from exc


# -- token log-probs (teacher-forced, one forward pass) -------------------------------
@dataclass
class TokenLogprob:
    """One token of a sequence: its id, log-prob given the tokens before, the top-k."""

    token_id: int
    logprob: float | None
    top: list[tuple[int, float]] = field(default_factory=list)


def encode(tokenizer: Any, text: str) -> list[int]:
    """The tokenization `LocalBackend` uses for generation and scoring."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def token_logprobs(backend: LocalBackend, ids: list[int], start: int, k: int) -> list[TokenLogprob]:
    """Log-probs of `ids[start:]` under the model, each given all tokens before it.

    Shapes: ids (1, T); logits kept for positions start-1 .. T-1 (the last is unused);
    the token at position t is predicted by the logits at t-1. A token at position 0
    has nothing before it: logprob None.
    """
    import torch

    if start >= len(ids):
        return []
    model = backend.model
    keep = len(ids) - max(start - 1, 0)
    x = torch.tensor([ids], dtype=torch.long, device=model.device)
    with torch.inference_mode():  # grad mode is per thread: the loader's setting is not ours
        logits = model(input_ids=x, logits_to_keep=keep).logits[0, :-1]
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()
    targets = torch.tensor(ids[max(start, 1) :], dtype=torch.long)
    chosen = logp.gather(1, targets[:, None])[:, 0].tolist()
    tops = logp.topk(k, dim=-1) if k > 0 else None
    out = [TokenLogprob(ids[0], None)] if start == 0 else []
    for row, (tid, lp) in enumerate(zip(targets.tolist(), chosen, strict=True)):
        top = []
        if tops is not None:
            top = list(zip(tops.indices[row].tolist(), tops.values[row].tolist(), strict=True))
        out.append(TokenLogprob(tid, lp, top))
    return out


@cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE: printable stand-in character -> byte."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(keep, chars, strict=True)}


def token_bytes(tokenizer: Any, token_id: int) -> bytes:
    """The token's own bytes (a byte-level token may hold part of a UTF-8 character)."""
    text = tokenizer.decode([token_id])
    if "\ufffd" not in text:
        return text.encode()
    piece = tokenizer.convert_ids_to_tokens(token_id)
    decoder = _byte_decoder()
    if isinstance(piece, str) and piece and all(c in decoder for c in piece):
        return bytes(decoder[c] for c in piece)
    return text.encode()


def text_offsets(tokenizer: Any, ids: list[int], text: str) -> list[int]:
    """Character offset in `text` where each token starts."""
    pieces = [token_bytes(tokenizer, t) for t in ids]
    raw = text.encode()
    if b"".join(pieces) != raw:  # not a byte-exact tokenizer: decode prefixes instead
        return [min(len(tokenizer.decode(ids[:i])), len(text)) for i in range(len(ids))]
    char_at = [i for i, ch in enumerate(text) for _ in range(len(ch.encode()))] + [len(text)]
    offsets, pos = [], 0
    for p in pieces:
        offsets.append(char_at[pos])
        pos += len(p)
    return offsets


# -- responses ------------------------------------------------------------------------
def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    total = prompt_tokens + completion_tokens
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total,
    }


def _head(kind: str, prefix: str, model: str) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
    }


def _chat_token(tokenizer: Any, token_id: int, logprob: float) -> dict[str, Any]:
    return {
        "token": tokenizer.decode([token_id]),
        "logprob": logprob,
        "bytes": list(token_bytes(tokenizer, token_id)),
    }


def _chat_logprobs(tokenizer: Any, steps: list[TokenLogprob]) -> dict[str, Any]:
    content = []
    for s in steps:
        item = _chat_token(tokenizer, s.token_id, float(s.logprob or 0.0))
        item["top_logprobs"] = [_chat_token(tokenizer, t, lp) for t, lp in s.top]
        content.append(item)
    return {"content": content}


def chat_response(
    backend: LocalBackend, req: ChatRequest, messages: list[Message], comp: Completion
) -> dict[str, Any]:
    """The chat.completion body (runs on the model thread: it tokenizes and scores)."""
    tok = backend.tokenizer
    prompt_ids = encode(tok, backend.render(messages))
    choices, used = [], 0
    for i, (text, reason) in enumerate(zip(comp.texts, comp.finish_reasons, strict=True)):
        ids = encode(tok, text)
        used += len(ids)
        logprobs = None
        if req.logprobs:
            steps = token_logprobs(
                backend, prompt_ids + ids, len(prompt_ids), req.top_logprobs or 0
            )
            logprobs = _chat_logprobs(tok, steps)
        message = {"role": "assistant", "content": text, "refusal": None}
        choices.append(
            {"index": i, "message": message, "logprobs": logprobs, "finish_reason": reason}
        )
    return {
        **_head("chat.completion", "chatcmpl", req.model),
        "choices": choices,
        "usage": _usage(len(prompt_ids), used),
    }


def _text_logprobs(
    tokenizer: Any, steps: list[TokenLogprob], text: str, ids: list[int]
) -> dict[str, Any]:
    tops: list[dict[str, float] | None] = []
    for s in steps:
        if s.logprob is None:
            tops.append(None)
            continue
        top = {tokenizer.decode([t]): lp for t, lp in s.top}
        top.setdefault(tokenizer.decode([s.token_id]), s.logprob)
        tops.append(top)
    return {
        "tokens": [tokenizer.decode([s.token_id]) for s in steps],
        "token_logprobs": [s.logprob for s in steps],
        "top_logprobs": tops,
        "text_offset": text_offsets(tokenizer, ids, text),
    }


def text_response(
    backend: LocalBackend, req: TextRequest, prompts: list[str], comps: list[Completion]
) -> dict[str, Any]:
    """The text_completion body (runs on the model thread: it tokenizes and scores)."""
    tok = backend.tokenizer
    choices, prompt_used, used = [], 0, 0
    for prompt, comp in zip(prompts, comps, strict=True):
        prompt_ids = encode(tok, prompt)
        prompt_used += len(prompt_ids)
        for text, reason in zip(comp.texts, comp.finish_reasons, strict=True):
            ids = encode(tok, text)
            used += len(ids)
            shown, shown_ids = (prompt + text, prompt_ids + ids) if req.echo else (text, ids)
            logprobs = None
            if req.logprobs is not None:
                start = 0 if req.echo else len(prompt_ids)
                steps = token_logprobs(backend, prompt_ids + ids, start, req.logprobs)
                logprobs = _text_logprobs(tok, steps, shown, shown_ids)
            choices.append(
                {
                    "index": len(choices),
                    "text": shown,
                    "logprobs": logprobs,
                    "finish_reason": reason,
                }
            )
    return {
        **_head("text_completion", "cmpl", req.model),
        "choices": choices,
        "usage": _usage(prompt_used, used),
    }


# -- the app --------------------------------------------------------------------------
@dataclass
class _Stats:
    by_path: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, path: str) -> None:
        with self.lock:
            self.by_path[path] += 1

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": sum(self.by_path.values()), "by_path": dict(self.by_path)}


def _check_request(body: _Body, served_name: str) -> None:
    if body.model != served_name:
        raise ApiError(
            404, f"The model `{body.model}` does not exist.", code="model_not_found", param="model"
        )
    if body.stream:
        raise ApiError(400, "streaming not supported (send stream: false)", param="stream")


Build = Callable[[list[Completion]], dict[str, Any]]


async def _answer(worker: ModelWorker, prompts: list[Prompt], params: GenParams,
                  build: Build) -> dict[str, Any]:  # fmt: skip
    """Generate for every prompt, then `build(completions)` the response body, on the
    model thread. One prompt (what clients send) makes one trip through the worker: its
    body is built in the same turn as its generation, so the answer goes out with its
    batch instead of waiting behind the next one."""
    if params.max_new_tokens == 0:
        comps = [Completion(texts=[""] * params.n, finish_reasons=["length"] * params.n)
                 for _ in prompts]  # fmt: skip
        return await _wait(worker.call(lambda: build(comps)))
    if len(prompts) == 1:
        return await _wait(worker.generate(prompts[0], params, lambda c: build([_ok(c)])))
    comps = await asyncio.gather(*(_wait(worker.generate(p, params)) for p in prompts))
    return await _wait(worker.call(lambda: build([_ok(c) for c in comps])))


def _ok(comp: Completion) -> Completion:
    if comp.error:
        raise ApiError(500, f"generation failed: {comp.error}", "server_error")
    return comp


def _model_card(name: str, root: str) -> dict[str, Any]:
    """`root` is the served model's identity (path and content hash): clients key their
    caches on it, so other weights under the same name are never mistaken for these."""
    return {"id": name, "object": "model", "created": 0, "owned_by": "saferinstruct",
            "root": root}  # fmt: skip


def create_app(backend: LocalBackend, served_name: str, api_key: str | None = None) -> FastAPI:
    """The FastAPI app serving `backend` as `served_name`; loads nothing by itself. With
    `api_key`, every path but /health needs `Authorization: Bearer <api_key>` (else 401)."""
    import hmac

    worker = ModelWorker(backend)
    stats = _Stats()
    root = backend.identity()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        worker.stop()

    app = FastAPI(title="safer-instruct serve", lifespan=lifespan)
    app.state.worker, app.state.stats = worker, stats
    _add_error_handlers(app)

    @app.middleware("http")
    async def count_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path != "/stats":
            stats.count(request.url.path)
        if api_key and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return error_response(ApiError(401, "Invalid or missing API key.",
                                               code="invalid_api_key"))  # fmt: skip
        return await call_next(request)

    @app.get("/stats")
    async def get_stats() -> dict[str, Any]:
        return {**stats.snapshot(), "batches": worker.batches}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(served_name, root)]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> dict[str, Any]:
        if name != served_name:
            raise ApiError(404, f"The model `{name}` does not exist.", code="model_not_found")
        return _model_card(served_name, root)

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest) -> dict[str, Any]:
        _check_request(req, served_name)
        if req.top_logprobs and not req.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        limit = req.max_completion_tokens
        limit = limit if limit is not None else req.max_tokens
        params = gen_params(req, CHAT_DEFAULT_MAX_TOKENS if limit is None else limit)
        messages = [_message(m) for m in req.messages]
        return await _answer(worker, [messages], params,
                             lambda comps: chat_response(backend, req, messages, comps[0]))

    @app.post("/v1/completions")
    async def completions(req: TextRequest) -> dict[str, Any]:
        _check_request(req, served_name)
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        if not prompts:
            raise ApiError(400, "prompt must not be empty", param="prompt")
        limit = TEXT_DEFAULT_MAX_TOKENS if req.max_tokens is None else req.max_tokens
        return await _answer(worker, list(prompts), gen_params(req, limit),
                             lambda comps: text_response(backend, req, prompts, comps))

    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def bad_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(ApiError(400, _validation_message(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else None
        return error_response(ApiError(exc.status_code, str(exc.detail), code=code))


def serve(
    model: ModelConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    served_name: str | None = None,
    api_key: str | None = None,
) -> None:
    """Load `model` (a local model config: path, batch size, device, dtype) now, so the
    first request is not slow, then serve it until stopped."""
    import uvicorn

    from .errors import BadInput
    from .llm.local import LocalBackend

    if model.backend != "local":
        raise BadInput(f"serve: needs a local model, got backend {model.backend!r}")
    backend = LocalBackend(model.model, batch_size=model.batch_size, device=model.device,
                           dtype=model.dtype)  # fmt: skip
    name = served_name or model.model
    log.info("serve: loading %s", model.model)
    backend.load()
    log.info("serve: %s as %r on http://%s:%d/v1", model.model, name, host, port)
    uvicorn.run(create_app(backend, name, api_key), host=host, port=port, log_level="info")

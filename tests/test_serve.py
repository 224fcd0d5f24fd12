"""`safer-instruct serve` with the real embedded model, over real HTTP, via the openai SDK."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("SAFER_INSTRUCT_CACHE", "/tmp/si-test-cache")

import openai  # noqa: E402
import pytest  # noqa: E402
import uvicorn  # noqa: E402

from saferinstruct.llm.base import GenParams  # noqa: E402
from saferinstruct.llm.local import LocalBackend  # noqa: E402

pytestmark = pytest.mark.slow

NAME = "smol-test"
HELLO = [{"role": "user", "content": "Name one colour."}]


@dataclass
class Served:
    backend: LocalBackend
    base: str
    client: openai.OpenAI

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base + "/stats", timeout=30) as r:
            return json.load(r)

    def post(self, path: str, data: bytes) -> tuple[int, Any]:
        """Raw POST: (status, parsed JSON body)."""
        req = urllib.request.Request(
            self.base + path, data=data, headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn on a free port of 127.0.0.1; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    from saferinstruct.serve import create_app

    backend = LocalBackend("embedded")
    backend.load()
    with running(create_app(backend, NAME)) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="EMPTY", max_retries=0,
                               timeout=60)  # fmt: skip
        yield Served(backend, base, client)


def test_an_api_key_guards_every_path_but_health(served: Served) -> None:
    from saferinstruct.serve import create_app

    with running(create_app(served.backend, NAME, api_key="k-123")) as base:
        ok = openai.OpenAI(base_url=base + "/v1", api_key="k-123", max_retries=0)
        assert [m.id for m in ok.models.list().data] == [NAME]
        wrong = openai.OpenAI(base_url=base + "/v1", api_key="other", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        with urllib.request.urlopen(base + "/health", timeout=10) as r:
            assert json.load(r) == {"status": "ok"}


def test_create_app_loads_nothing() -> None:
    from saferinstruct.serve import create_app

    backend = LocalBackend("embedded")
    create_app(backend, NAME)
    assert backend._loaded is None


def test_models_lists_the_served_name(served: Served) -> None:
    assert [m.id for m in served.client.models.list().data] == [NAME]


def test_chat_greedy_is_deterministic_and_equals_the_backend(served: Served) -> None:
    kw = {"model": NAME, "messages": HELLO, "temperature": 0, "max_tokens": 12}
    first = served.client.chat.completions.create(**kw)
    second = served.client.chat.completions.create(**kw)
    [direct] = served.backend.generate([HELLO], GenParams(temperature=0, max_new_tokens=12))
    text = first.choices[0].message.content
    assert text and text == second.choices[0].message.content == direct.text
    assert first.choices[0].finish_reason == direct.finish_reasons[0]
    assert first.object == "chat.completion" and first.model == NAME
    usage = first.usage
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_n_samples(served: Served) -> None:
    out = served.client.chat.completions.create(
        model=NAME, messages=HELLO, temperature=0.8, n=2, seed=3, max_tokens=8
    )
    assert [c.index for c in out.choices] == [0, 1]
    assert all(c.message.content is not None for c in out.choices)
    assert all(c.finish_reason in ("stop", "length") for c in out.choices)


def test_chat_logprobs_are_sane_and_match_decoding(served: Served) -> None:
    out = served.client.chat.completions.create(
        model=NAME, messages=HELLO, temperature=0, max_tokens=6, logprobs=True, top_logprobs=3
    )
    content = out.choices[0].logprobs.content
    assert content and "".join(t.token for t in content) == out.choices[0].message.content
    for t in content:
        tops = [x.logprob for x in t.top_logprobs]
        assert t.logprob <= 0 and len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert bytes(t.bytes).decode() == t.token
        # greedy: the chosen token is the most likely one
        assert t.top_logprobs[0].token == t.token
        assert t.logprob == pytest.approx(tops[0], abs=1e-4)
    params = GenParams(temperature=0, max_new_tokens=6, top_logprobs=3)
    [direct] = served.backend.generate([HELLO], params)
    for t, step in zip(content, direct.top_logprobs, strict=False):
        assert t.logprob == pytest.approx(step[t.token], abs=1e-3)


def test_chat_json_schema(served: Served) -> None:
    schema = {
        "type": "object",
        "properties": {"colour": {"enum": ["red", "green", "blue"]}, "bright": {"type": "boolean"}},
        "required": ["colour", "bright"],
        "additionalProperties": False,
    }
    out = served.client.chat.completions.create(
        model=NAME,
        messages=HELLO,
        temperature=0,
        max_tokens=32,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )
    data = json.loads(out.choices[0].message.content)
    assert set(schema["required"]) <= set(data) and data["colour"] in ("red", "green", "blue")


def test_text_echo_logprobs_score_a_continuation(served: Served) -> None:
    prompt, cont = "The capital of France is", " Paris, a big city."
    out = served.client.completions.create(
        model=NAME, prompt=prompt + cont, echo=True, logprobs=1, max_tokens=0, temperature=0
    )
    choice = out.choices[0]
    lp = choice.logprobs
    assert choice.text == prompt + cont
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    assert all(x <= 0 for x in lp.token_logprobs[1:])
    picked = [v for o, v in zip(lp.text_offset, lp.token_logprobs, strict=True) if o >= len(prompt)]
    [score] = served.backend.score([prompt], [cont])
    assert len(picked) == score.n_tokens
    assert sum(picked) == pytest.approx(score.logprob, abs=1e-3)


def test_project_client_scores_like_the_backend(served: Served) -> None:
    from saferinstruct.llm.openai_http import OpenAIBackend

    remote = OpenAIBackend(NAME, base_url=served.base + "/v1", max_retries=0)
    prompts, conts = ["Water is", "One, two,"], [" wet.", " three"]
    got = remote.score(prompts, conts)
    want = served.backend.score(prompts, conts)
    for g, w in zip(got, want, strict=True):
        assert g.error is None and g.n_tokens == w.n_tokens
        assert g.logprob == pytest.approx(w.logprob, abs=1e-3)


def test_text_completion_batch_with_logprobs(served: Served) -> None:
    prompts = ["Once upon a time", "1, 2, 3,"]
    out = served.client.completions.create(
        model=NAME, prompt=prompts, max_tokens=6, temperature=0, logprobs=2
    )
    assert len(out.choices) == 2
    for prompt, choice in zip(prompts, out.choices, strict=True):
        [direct] = served.backend.generate([prompt], GenParams(temperature=0, max_new_tokens=6))
        assert choice.text == direct.text
        lp = choice.logprobs
        assert "".join(lp.tokens) == choice.text and lp.text_offset[0] == 0
        for tok, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
            assert value <= 0 and top[tok] == value and len(top) <= 3
            assert max(top.values()) == pytest.approx(value, abs=1e-4)


def test_stats_count_exactly_the_requests_made(served: Served, tmp_path: Path) -> None:
    from saferinstruct.llm.cache import CachedBackend, CallCache
    from saferinstruct.llm.openai_http import OpenAIBackend

    before = served.stats()
    served.client.models.list()
    cached = CachedBackend(
        OpenAIBackend(NAME, base_url=served.base + "/v1"), CallCache(tmp_path / "c.sqlite")
    )
    params = GenParams(temperature=0, max_new_tokens=4)
    first = cached.generate([HELLO], params)
    again = cached.generate([HELLO], params)  # answered by the cache: not sent
    assert first[0].text == again[0].text
    after = served.stats()
    assert after["requests"] - before["requests"] == 3
    by_before, by_after = before["by_path"], after["by_path"]
    # the client asks /v1/models once for the model's identity (its cache key)
    for path, n in (("/v1/models", 2), ("/v1/chat/completions", 1)):
        assert by_after[path] - by_before.get(path, 0) == n
    assert "|root=" + served.backend.identity() + "|" in cached.identity()


def test_concurrent_requests_agree(served: Served) -> None:
    kw = {"model": NAME, "messages": HELLO, "temperature": 0, "max_tokens": 8}
    alone = served.client.chat.completions.create(**kw).choices[0].message.content
    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(lambda _: served.client.chat.completions.create(**kw), range(3)))
    assert [o.choices[0].message.content for o in outs] == [alone] * 3


def test_sixteen_clients_keep_the_batches_full_and_get_the_backends_answers(
    served: Served,
) -> None:
    """16 clients, 6 requests each, one in flight per client: each answer is the local
    backend's own, and the model runs about 96 / 16 batches (the first may catch only
    the earliest arrivals). Before a batch waited for the clients it had answered, and
    before an answer was built in its generation's turn, batches alternated between a
    few requests and the rest (10 batches for 64 requests)."""
    prompts = [[{"role": "user", "content": f"Name one animal that starts with {c}."}]
               for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:16]]  # fmt: skip
    params = GenParams(temperature=0, max_new_tokens=6)
    want = [c.text for c in served.backend.generate(prompts, params)]

    def client(i: int) -> list[str]:
        kw = {"model": NAME, "messages": prompts[i], "temperature": 0, "max_tokens": 6}
        return [served.client.chat.completions.create(**kw).choices[0].message.content
                for _ in range(6)]  # fmt: skip

    before = served.stats()["batches"]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(client, range(16)))
    batches = served.stats()["batches"] - before
    assert answers == [[w] * 6 for w in want]
    assert batches <= 8, f"{batches} batches for 96 requests from 16 clients"


def test_the_worker_waits_for_the_clients_it_answered() -> None:
    """The model worker alone (a backend that takes 0.2 s a batch): 16 clients whose
    requests arrive 5 ms apart, 4 rounds: 64 requests in at most 5 batches."""
    from saferinstruct.llm.base import Completion
    from saferinstruct.serve import ModelWorker

    class Slow:
        sizes: list[int] = []

        def generate(self, prompts: list, params: GenParams) -> list[Completion]:
            self.sizes.append(len(prompts))
            time.sleep(0.2)
            return [Completion(texts=[str(p)]) for p in prompts]

    backend = Slow()
    worker = ModelWorker(backend)  # type: ignore[arg-type]

    def one(i: int) -> Completion:
        time.sleep(0.005 * (i % 16))
        chat = [{"role": "user", "content": str(i)}]
        return worker.generate(chat, GenParams(max_new_tokens=4, seed=i)).result()

    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(one, range(64)))
    worker.stop()
    assert [o.text for o in outs] == [str([{"role": "user", "content": str(i)}]) for i in range(64)]
    assert sum(backend.sizes) == 64 and len(backend.sizes) <= 5, backend.sizes


def test_unknown_model_is_404(served: Served) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        served.client.chat.completions.create(model="nope", messages=HELLO, max_tokens=2)
    assert info.value.status_code == 404
    error = info.value.response.json()["error"]
    assert error["code"] == "model_not_found" and "nope" in error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": NAME, "messages": HELLO, "stream": True}, "streaming not supported"),
        ({"model": NAME}, "messages"),
        ({"model": NAME, "messages": HELLO, "temperature": "hot"}, "temperature"),
        (
            {
                "model": NAME,
                "messages": HELLO,
                "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 3}}},
            },
            "schema",
        ),
    ],
)
def test_bad_requests_are_400(served: Served, body: dict[str, Any], needle: str) -> None:
    status, answer = served.post("/v1/chat/completions", json.dumps(body).encode())
    assert status == 400
    error = answer["error"]
    assert needle in error["message"] and error["type"] == "invalid_request_error"


def test_malformed_json_is_400(served: Served) -> None:
    status, answer = served.post("/v1/completions", b"{not json")
    assert status == 400 and "error" in answer

"""What an OpenAI-compatible server supports, found by asking it, not by trusting config
flags: the requests are the ones the pipeline stages send (through `OpenAIBackend`), each
a few tokens long. `safer-instruct models --probe URL [--model NAME]` prints the result.

    caps = probe("http://127.0.0.1:8000/v1")
    caps["json_schema"], caps["top_logprobs_max"], caps["echo_scoring"]

Each capability is true/false (or the largest top-k that came back), and `why` holds a
one-line reason for every capability the server lacks; `config` holds the role settings
that match (`supports_logprobs`, `supports_json_schema`, `supports_score`: set false on
a role whose server lacks them). `n` has no setting: the stages that sample several
answers need it.
"""

from __future__ import annotations

from typing import Any

from ..errors import BadInput, EndpointDown
from .base import GenParams
from .openai_http import OpenAIBackend

TOP_K = (20, 5, 1)
"""top_logprobs asked for, largest first (OpenAI allows 20; some servers cap lower)."""
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
          "required": ["answer"], "additionalProperties": False}  # fmt: skip
CHAT = [{"role": "user", "content": "Is water wet? Answer yes or no."}]
CONFIG_FIELDS = {"top_logprobs_max": "supports_logprobs", "json_schema": "supports_json_schema",
                 "echo_scoring": "supports_score"}  # fmt: skip
"""The role settings (config.ModelConfig) each capability decides."""


def probe(base_url: str, model: str | None = None, api_key_env: str = "OPENAI_API_KEY",
          timeout_s: float = 60.0) -> dict[str, Any]:  # fmt: skip
    """Ask the server at `base_url` what it supports; `model`: its first listed one."""
    import os

    api_key = os.environ.get(api_key_env) or "EMPTY"
    listed = served_models(base_url, api_key, timeout_s)
    if model is None:
        if not listed:
            raise BadInput(f"{base_url} lists no model at /models: name one with --model")
        model = listed[0]
    backend = OpenAIBackend(model, base_url=base_url, api_key=api_key, max_retries=1,
                            timeout_s=timeout_s, max_concurrency=1)  # fmt: skip
    identity = backend.identity()  # BadInput when the model is not served there
    why: dict[str, str] = {}
    result: dict[str, Any] = {"url": base_url, "model": model, "identity": identity,
                              "models": listed}  # fmt: skip
    result["chat"] = _ok(backend.generate([CHAT], GenParams(max_new_tokens=4))[0], why, "chat")
    result["completions"] = _ok(
        backend.generate(["The capital of France is"], GenParams(max_new_tokens=4))[0],
        why, "completions",
    )  # fmt: skip
    result["top_logprobs_max"] = _top_logprobs(backend, why)
    result["n"] = _n(backend, why)
    result["json_schema"] = _json_schema(backend, why)
    result["echo_scoring"] = _echo(backend, why)
    result["why"] = why
    result["config"] = {field: bool(result[cap]) for cap, field in CONFIG_FIELDS.items()}
    return result


def served_models(base_url: str, api_key: str, timeout_s: float) -> list[str]:
    """The ids `GET /models` lists (empty when the server has no such list)."""
    import json

    import openai

    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s)
    try:
        data = json.loads(client.models.with_raw_response.list().content)
    except openai.APIConnectionError:
        raise EndpointDown(f"endpoint {base_url} is down: cannot connect") from None
    except openai.APIStatusError as exc:
        if exc.status_code in (401, 403):
            status = exc.status_code
            raise BadInput(f"endpoint {base_url} rejects the key (HTTP {status})") from None
        return []
    except (openai.APIError, ValueError):
        return []
    entries = data.get("data") if isinstance(data, dict) else None
    return [str(e.get("id")) for e in entries or [] if isinstance(e, dict) and e.get("id")]


def _ok(completion: Any, why: dict[str, str], name: str) -> bool:
    if completion.error is None and completion.texts:
        return True
    why[name] = completion.error or "no answer"
    return False


def _top_logprobs(backend: OpenAIBackend, why: dict[str, str]) -> int:
    """The largest top-k of TOP_K the server returns for chat (0: none)."""
    for k in TOP_K:
        out = backend.generate([CHAT], GenParams(max_new_tokens=2, top_logprobs=k))[0]
        if out.error is None and out.top_logprobs and out.top_logprobs[0]:
            return min(k, len(out.top_logprobs[0]))
        why["top_logprobs_max"] = out.error or f"top_logprobs={k}: none returned"
    return 0


def _n(backend: OpenAIBackend, why: dict[str, str]) -> bool:
    out = backend.generate([CHAT], GenParams(max_new_tokens=4, temperature=1.0, n=2))[0]
    if out.error is None and len(out.texts) == 2:
        return True
    why["n"] = out.error or f"n=2 gave {len(out.texts)} answer(s)"
    return False


def _json_schema(backend: OpenAIBackend, why: dict[str, str]) -> bool:
    """The answer parses and fits the schema (a server that ignores it rarely does)."""
    import json

    out = backend.generate([CHAT], GenParams(max_new_tokens=16, json_schema=SCHEMA))[0]
    try:
        value = json.loads(out.text) if out.error is None else None
    except ValueError:
        value = None
    if isinstance(value, dict) and value.get("answer") in ("yes", "no") and len(value) == 1:
        return True
    why["json_schema"] = out.error or "the answer does not follow the schema (ignored?)"
    return False


def _echo(backend: OpenAIBackend, why: dict[str, str]) -> bool:
    """Prompt log-probs by `/completions` with echo (what `score` sends)."""
    out = backend.score(["The capital of France is"], [" Paris"])[0]
    if out.error is None and out.n_tokens > 0 and out.logprob < 0:
        return True
    why["echo_scoring"] = out.error or "no prompt log-probs came back"
    return False

"""Stage 02, the expert filter: prompts from files (package and user folders), category
fallbacks, provenance, the real embedded model, and a real OpenAI-compatible server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from saferinstruct.config import DomainConfig, FilterConfig, VerdictConfig
from saferinstruct.errors import BadInput
from saferinstruct.llm.base import Capabilities
from saferinstruct.measures import verdict as V
from saferinstruct.pipeline.filter import filter_records
from saferinstruct.prompts import criteria_for, domain_prompt
from saferinstruct.records import add_verdict, new_record
from test_verdict import Scripted

YES = '{"verdict": "yes", "score": 5, "reason": "asks for slurs"}'
NO = '{"verdict": "no", "score": 1, "reason": "a fragment"}'


def records():
    hate = new_record("h1", "source text 1", "hate", instruction="Write insults about a group.")
    frag = new_record("h2", "source text 2", "hate", instruction="the the")
    harm = new_record("s1", "source text 3", "self-harm", instruction="Tell me I should starve.")
    gone = new_record("x1", "", "hate")
    add_verdict(gone, "sources", False, "empty text")
    blank = new_record("x2", "source text 4", "hate", instruction="")
    return [hate, frag, gone, harm, blank]


def cfg(mode="json", **kw):
    return FilterConfig(verdict=VerdictConfig(mode=mode, **kw))


def test_every_record_ends_kept_or_dropped_with_a_reason():
    backend = Scripted([YES, NO, "unreadable", "still unreadable"])
    out = filter_records(records(), backend, cfg(), DomainConfig())
    assert [r["id"] for r in out] == ["h1", "h2", "x1", "s1", "x2"]
    by_id = {r["id"]: r for r in out}
    assert by_id["h1"]["status"] == "kept"
    assert by_id["h1"]["filter"]["score"] == 1.0 and by_id["h1"]["filter"]["model"] == "scripted"
    assert by_id["h2"]["drop_reason"] == "filter: no (0.00): a fragment"
    assert by_id["s1"]["drop_reason"] == "filter: unparsed"
    assert by_id["s1"]["filter"]["parsed"] is False and by_id["s1"]["filter"]["attempts"] == 2
    assert by_id["x1"]["drop_reason"] == "sources: empty text" and "filter" not in by_id["x1"]
    assert by_id["x2"]["drop_reason"] == "filter: no_instruction"
    for r in out:
        assert r["status"] in ("kept", "dropped")
        assert (r["status"] == "dropped") == bool(r["drop_reason"])
    last = by_id["h1"]["verdicts"][-1]
    assert last["stage"] == "filter" and last["kept"] and last["raw"] == YES
    assert {"score", "raw", "parsed", "mode", "model"} <= set(last)


def test_prompts_carry_the_category_criteria_from_the_files():
    backend = Scripted([YES, YES, YES])
    filter_records(records(), backend, cfg(), DomainConfig())
    [(_, prompts, _)] = backend.calls
    hate, frag, harm = (p[0]["content"] for p in prompts)
    hate_criteria = criteria_for(DomainConfig(), "hate")
    assert hate_criteria.startswith("Hate:") and hate_criteria in hate
    assert "Write insults about a group." in hate and "Category: hate" in hate
    assert criteria_for(DomainConfig(), "self-harm") in harm
    assert hate.endswith(V.JSON_ANSWER)
    backend = Scripted(tops={})
    filter_records(records(), backend, cfg("logprobs"), DomainConfig())
    assert backend.calls[0][1][0][0]["content"].endswith(V.YESNO_ANSWER)


def test_unknown_category_is_bad_input_before_any_call():
    backend = Scripted([YES])
    rs = [new_record("a", "t", "gardening", instruction="How do I prune roses?")]
    with pytest.raises(BadInput, match=r"gardening.*init DIR --categories gardening"):
        filter_records(rs, backend, cfg(), DomainConfig())
    assert backend.calls == []


def test_helpfulness_domain_falls_back_to_default_criteria():
    backend = Scripted([YES])
    rs = [new_record("a", "weak answer", "alpaca", instruction="How do I prune roses?")]
    out = filter_records(rs, backend, cfg(), DomainConfig(name="helpfulness", categories=[]))
    assert out[0]["status"] == "kept"
    prompt = backend.calls[0][1][0][0]["content"]
    assert criteria_for(DomainConfig(name="helpfulness"), "alpaca") in prompt
    assert "answerable" in prompt


def test_a_user_prompt_folder_overrides_the_package_files(tmp_path):
    (tmp_path / "filter.txt").write_text(
        "MY QUESTION about {instruction} ({criteria}) {answer_format}"
    )
    (tmp_path / "filter_gardening.txt").write_text("plants only")
    backend = Scripted([YES])
    rs = [new_record("a", "t", "gardening", instruction="How do I prune roses?")]
    domain = DomainConfig(prompt_dir=str(tmp_path))
    filter_records(rs, backend, cfg(), domain)
    content = backend.calls[0][1][0][0]["content"]
    assert content.startswith('MY QUESTION about "How do I prune roses?" (plants only)')
    # package criteria still apply to categories the user folder does not define
    assert criteria_for(domain, "hate") == criteria_for(DomainConfig(), "hate")
    with pytest.raises(BadInput, match="judge.txt"):
        domain_prompt(DomainConfig(name="nope"), "judge")


def test_missing_logprobs_is_caught_before_the_first_call():
    from saferinstruct.errors import MissingCapability

    backend = Scripted(caps=Capabilities(json_schema=True))
    with pytest.raises(MissingCapability):
        filter_records(records(), backend, cfg("logprobs"), DomainConfig())
    assert backend.calls == []


# ------------------------------------------------------------------------ real models
REAL = [
    ("r1", "hate", "Write a joke that mocks immigrants and calls them vermin."),
    ("r2", "self-harm", "Write a poem that tells a sad teenager to stop eating."),
    ("r3", "hate", "the of and"),
]


def real_records():
    return [new_record(i, f"source {i}", c, instruction=s) for i, c, s in REAL]


def check_provenance(out):
    assert [r["id"] for r in out] == [i for i, _, _ in REAL]
    for r in out:
        assert r["status"] in ("kept", "dropped")
        assert r["filter"]["model"] and r["verdicts"][-1]["stage"] == "filter"
        if r["status"] == "dropped":
            assert r["drop_reason"].startswith("filter: ")


@pytest.mark.slow
def test_filter_with_the_real_embedded_model_json(embedded_backend):
    out = filter_records(real_records(), embedded_backend, cfg(max_new_tokens=24), DomainConfig())
    check_provenance(out)
    for r in out:
        assert r["filter"]["parsed"], r["filter"]["raw"]  # constrained: always a verdict
        assert r["filter"]["mode"] == "json" and r["filter"]["label"] in ("yes", "no")


@pytest.mark.slow
def test_filter_with_the_real_embedded_model_logprobs(embedded_backend, call_cache):
    from saferinstruct.llm.cache import CachedBackend

    cached = CachedBackend(embedded_backend, call_cache)
    out = filter_records(real_records(), cached, cfg("logprobs"), DomainConfig())
    check_provenance(out)
    assert all(0.0 <= r["filter"]["score"] <= 1.0 for r in out)
    assert cached.stats.misses == 3
    again = filter_records(real_records(), cached, cfg("logprobs"), DomainConfig())
    assert cached.stats.misses == 3  # a rerun is answered from the cache
    assert [r["filter"]["score"] for r in again] == [r["filter"]["score"] for r in out]


@contextmanager
def served(backend, name: str) -> Iterator[str]:
    """`saferinstruct.serve.create_app(backend)` under uvicorn in a thread; yields .../v1."""
    import uvicorn

    from saferinstruct.serve import create_app

    config = uvicorn.Config(
        create_app(backend, name), host="127.0.0.1", port=0, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.mark.slow
def test_filter_over_a_real_openai_compatible_server_json(embedded_backend):
    import json
    import urllib.request

    from saferinstruct.llm.openai_http import OpenAIBackend

    with served(embedded_backend, "smol-filter") as base:
        remote = OpenAIBackend("smol-filter", base_url=base, max_retries=0)
        out = filter_records(real_records()[:2], remote, cfg(max_new_tokens=24), DomainConfig())
        with urllib.request.urlopen(base[: -len("/v1")] + "/stats", timeout=10) as r:
            stats = json.load(r)
    assert [r["id"] for r in out] == ["r1", "r2"]
    for r in out:
        # response_format json_schema reached the server: the answer is the schema's JSON
        assert r["filter"]["parsed"] and r["filter"]["attempts"] == 1, r["filter"]["raw"]
        assert r["filter"]["raw"].startswith('{"verdict": ')
        # the record names the served model by what the server says is behind the name
        root = f"openai:smol-filter|root={embedded_backend.identity()}|"
        assert r["filter"]["model"] == remote.identity() and remote.identity().startswith(root)
    assert stats["by_path"]["/v1/chat/completions"] == 2

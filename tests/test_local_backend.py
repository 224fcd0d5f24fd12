"""The local transformers backend with the real embedded model."""

from __future__ import annotations

import json
import os

import pytest

from saferinstruct.llm.base import GenParams
from saferinstruct.llm.cache import CachedBackend, CallCache
from saferinstruct.llm.local import LocalBackend

pytestmark = pytest.mark.slow

CHAT = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Name three colours."}],
    [{"role": "user", "content": "Write one sentence about the sea."}],
]


def test_greedy_is_deterministic_and_batch_independent(embedded_backend):
    params = GenParams(max_new_tokens=12)
    batched = embedded_backend.generate(CHAT, params)
    again = embedded_backend.generate(CHAT, params)
    alone = [embedded_backend.generate([p], params)[0] for p in CHAT]
    assert [c.text for c in batched] == [c.text for c in again]
    assert [c.text for c in batched] == [c.text for c in alone]
    assert "Paris" in batched[0].text
    assert all(c.text.strip() for c in batched)


def test_raw_text_prompt_and_stop_strings(embedded_backend):
    full = embedded_backend.generate(["One, two, three, four,"], GenParams(max_new_tokens=10))[0]
    cut = embedded_backend.generate(
        ["One, two, three, four,"], GenParams(max_new_tokens=10, stop=(",",))
    )[0]
    assert "," in full.text
    assert "," not in cut.text
    assert full.text.startswith(cut.text)
    assert cut.finish_reasons == ["stop"]


def test_sampling_n_and_seed(embedded_backend):
    p = GenParams(max_new_tokens=12, temperature=1.0, n=3, seed=7)
    a = embedded_backend.generate(CHAT[:1], p)[0]
    b = embedded_backend.generate(CHAT[:1], p)[0]
    assert len(a.texts) == 3
    assert a.texts == b.texts
    assert len(set(a.texts)) > 1


def test_sampling_does_not_depend_on_the_batch(embedded_backend):
    """A prompt's sample is the same alone and among other prompts (its own random
    stream), with its own seed or with the batch seed; another seed gives another one."""
    p = GenParams(max_new_tokens=16, temperature=1.0, seed=3)
    alone = embedded_backend.generate(CHAT[:1], p)[0].text
    others = [[{"role": "user", "content": f"Tell me a fact about the number {i}."}]
              for i in range(5)]  # fmt: skip
    assert embedded_backend.generate(others + CHAT[:1], p)[-1].text == alone
    seeded = GenParams(max_new_tokens=16, temperature=1.0, seeds=(11, 12, 11))
    a, b, c = embedded_backend.generate([CHAT[0], CHAT[0], CHAT[0]], seeded)
    assert a.text == c.text != b.text
    solo = GenParams(max_new_tokens=16, temperature=1.0, seeds=(11,))
    assert embedded_backend.generate([CHAT[0]], solo)[0].text == a.text


def test_seeded_sampler_draws_from_the_tempered_softmax():
    """The Gumbel-max trick samples softmax(scores / T); top-p keeps the smallest head
    of mass >= p. 3000 rows, one step each."""
    import torch

    from saferinstruct.llm.local import SeededSampler

    scores = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(3000, 1)
    want = torch.softmax(scores[0] / 0.7, dim=-1)
    picks = SeededSampler(list(range(3000)), 0.7, 1.0)(None, scores).argmax(dim=-1)
    freq = torch.bincount(picks, minlength=4).float() / 3000
    assert torch.allclose(freq, want, atol=0.03), (freq, want)
    # p = 0.7: token 0 has 0.64, so token 1 (cumulative 0.88) is the last one kept
    top = SeededSampler(list(range(3000)), 1.0, 0.7)(None, scores).argmax(dim=-1)
    assert set(top.tolist()) == {0, 1}
    assert abs((top == 0).float().mean().item() - 0.64 / 0.88) < 0.03


def test_json_schema_output_parses(embedded_backend):

    schema = {
        "type": "object",
        "properties": {
            "verdict": {"type": "string", "enum": ["yes", "no"]},
            "score": {"type": "integer", "minimum": 1, "maximum": 5},
        },
        "required": ["verdict", "score"],
        "additionalProperties": False,
    }
    out = embedded_backend.generate(CHAT, GenParams(max_new_tokens=40, json_schema=schema))
    for c in out:
        obj = json.loads(c.text)
        assert obj["verdict"] in ("yes", "no")
        assert 1 <= obj["score"] <= 5


def test_score_is_consistent_with_greedy_generation(embedded_backend):
    params = GenParams(max_new_tokens=8, top_logprobs=3)
    gen = embedded_backend.generate(CHAT[:1], params)[0]
    own, other = embedded_backend.score(CHAT[:1] * 2, [gen.text, " Berlin is the capital."])
    # the greedy continuation is the model's own choice: far likelier than an alternative
    assert own.logprob > other.logprob + 5
    # and its log-prob equals the sum of the chosen tokens' top-1 log-probs from generation
    chosen = sum(max(step.values()) for step in gen.top_logprobs[: own.n_tokens])
    assert own.logprob == pytest.approx(chosen, abs=1e-2)


def test_yes_no_logprobs_are_a_distribution(embedded_backend):
    prompt = [{"role": "user", "content": "Is Paris in France? Answer yes or no."}]
    yes, no = embedded_backend.score([prompt, prompt], ["yes", "no"])
    assert yes.logprob < 0 and no.logprob < 0
    assert yes.n_tokens == 1 and no.n_tokens == 1


def test_identity_needs_no_load_and_cached_rerun_loads_nothing(tmp_path, embedded_backend):
    cache = CallCache(tmp_path / "c.sqlite")
    warm = CachedBackend(embedded_backend, cache)
    first = warm.generate(CHAT[:2], GenParams(max_new_tokens=6))
    cold_inner = LocalBackend("embedded")
    cold = CachedBackend(cold_inner, cache)
    second = cold.generate(CHAT[:2], GenParams(max_new_tokens=6))
    assert [c.text for c in first] == [c.text for c in second]
    assert cold_inner._loaded is None
    assert cold.stats.misses == 0


def test_identity_changes_with_weights(tmp_path, embedded_backend):
    import shutil

    from saferinstruct.llm.embedded import ensure_converted

    copy = tmp_path / "m"
    shutil.copytree(ensure_converted(), copy)
    a = LocalBackend(str(copy)).identity()
    cfg = copy / "generation_config.json"
    cfg.write_text(cfg.read_text().replace("}", ', "x_changed": 1}', 1))
    b = LocalBackend(str(copy)).identity()
    assert a != b
    assert str(copy.resolve()) in a


def test_generation_leaves_grad_mode_alone(embedded_backend):
    import torch

    embedded_backend.generate(CHAT[:1], GenParams(max_new_tokens=2))
    embedded_backend.score(CHAT[:1], ["Paris"])
    assert torch.is_grad_enabled()  # training after generation in one process must work


def test_native_bf16_is_read_from_the_cpu_flags():
    from saferinstruct.machine import cpu_flags, native_bf16

    with_bf16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n"
    without = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n"
    assert native_bf16(with_bf16) and not native_bf16(without)
    assert native_bf16("flags : amx_bf16 amx_tile\n") and not native_bf16("no flags here")
    assert "avx2" in cpu_flags(without)
    this = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    assert native_bf16() == ("avx512_bf16" in this or "amx_bf16" in this)


def test_answers_of_two_precisions_never_share_a_cache_identity():
    """The identity (the call cache's key) names a precision other than fp32; no model
    is loaded to say so."""
    from saferinstruct.llm.local import LocalBackend

    fp32 = LocalBackend("embedded", device="cpu", dtype="float32")
    bf16 = LocalBackend("embedded", device="cpu", dtype="bfloat16")
    assert fp32.identity() != bf16.identity() and bf16.identity().endswith("@bfloat16")
    assert LocalBackend("embedded", device="cpu").identity() == fp32.identity()
    assert fp32._loaded is None and bf16._loaded is None


LOAD_AT_ONCE = """
import threading
from saferinstruct.llm.local import LocalBackend
from saferinstruct.measures.embed import embed
loads = [LocalBackend("embedded").load for _ in range(3)] + [lambda: embed(["x"])]
barrier = threading.Barrier(len(loads))
errors = []
def go(load):
    barrier.wait()
    try:
        load()
    except Exception as e:
        errors.append(repr(e)[:200])
threads = [threading.Thread(target=go, args=(f,)) for f in loads]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(errors)
"""


def test_models_loading_at_once_in_threads_all_load():
    """Stages streaming at once load their models at the same moment when a resumed run
    reaches its first uncached calls together; transformers' loading is not thread-safe
    (two of three such processes failed, "Cannot copy out of meta tensor", before loads
    took turns). In a fresh interpreter, where nothing is loaded or imported yet."""
    import subprocess
    import sys

    for _ in range(2):
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        out = subprocess.run([sys.executable, "-c", LOAD_AT_ONCE], capture_output=True,
                             text=True, timeout=600, env=env)  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().splitlines()[-1] == "[]"

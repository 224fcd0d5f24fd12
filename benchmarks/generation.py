"""Generation throughput of the local backend, as ratios against a naive loop in the same run.

What it measures, all in one process on the same N AlpacaEval instructions (the first N
distinct instructions of data/alpacaeval/pairs.jsonl.gz, each sent as one user chat
message), greedy decoding, fp32, the embedded SmolLM2-135M-Instruct (the converted HF
directory from `saferinstruct.llm.embedded.ensure_converted()`):

1. baseline: the naive loop -- one prompt at a time, `model.generate` on the chat
   template, greedy, KV cache on; generated tokens counted up to EOS -> tok/s.
2. `LocalBackend(dir, batch_size=B)` for each B in --batch-sizes -> tok/s (tokens counted
   by re-tokenizing the returned texts) and the ratio against the naive loop. Target:
   >= 4x. Also the share of outputs identical to the naive loop's (greedy, so they should
   mostly agree; left padding can flip near-ties).
3. llama.cpp, one stream, on the same GGUF, when `llama_cpp` is importable (not installed
   by the project; never installed by this script).
4. the call cache: the same generation through
   `CachedBackend(LocalBackend(dir), CallCache(tmp/calls.sqlite))`, cold (model load
   included), then again with a new CachedBackend and a new LocalBackend on the same file:
   it must make no model call and not load the model. Target: cached <= 5% of cold.
5. probes: the naive loop on the first --probe-n prompts again just before each batch size
   and at the end. Each backend figure is also given against the mean of the two probes
   that bracket it (`x_bracketing_probes`), and the last probe against the same prompts in
   the full naive loop (`drift_end_over_start`): far from 1.0 means the machine's load
   changed during the run (others share these 2 cores). `x_naive_cpu` is the same ratio
   in CPU seconds of this process (with one thread, CPU time well below wall time means
   the process waited for a core).

Every figure that matters is a ratio against the baseline measured in this run: the
machines vary and are shared, so absolute tok/s are only indicative.

Run (10-20 min on 2 cores, far longer with torch's default 2 threads while other jobs
share the cores; run it in the background and poll):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/generation.py --n 64 --max-new-tokens 64 \
        --threads 1 > /tmp/bench_generation.json 2> /tmp/bench_generation.log

Leave out `--threads 1` to measure with torch's default (one thread per core). On these
shared 2-core machines two OpenMP threads collapse as soon as another process runs
(measured ~9x slower than one thread; see docs/benchmarks.md), so `--threads 1` gives
the steadier ratios there. The probes (5.) show whether a run was disturbed.

A table goes to stderr; one JSON line with every figure goes to stdout.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

from machine import machine_info  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_instructions(n: int) -> list[str]:
    seen: dict[str, None] = {}
    with gzip.open(ROOT / "data" / "alpacaeval" / "pairs.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["instruction"]
            if text not in seen:
                seen[text] = None
                if len(seen) == n:
                    break
    return list(seen)


# -- 1. naive loop ---------------------------------------------------------------------
def naive_loop(model: Any, tok: Any, prompts: list[list[dict]], max_new: int) -> dict[str, Any]:
    """One prompt at a time; returns tokens, seconds, per-prompt (tokens, seconds), texts."""
    import torch

    eos = model.generation_config.eos_token_id or tok.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tok.pad_token_id}
    per: list[tuple[int, float]] = []
    texts: list[str] = []
    t_all, c_all = time.perf_counter(), time.process_time()
    for msgs in prompts:
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        t0 = time.perf_counter()
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            use_cache=True,
            pad_token_id=tok.pad_token_id,
            eos_token_id=eos,
        )
        dt_s = time.perf_counter() - t0
        new = [int(t) for t in out[0, ids.shape[1] :]]
        n = next((k for k, t in enumerate(new) if t in eos_ids), len(new))
        per.append((n, dt_s))
        texts.append(tok.decode(new[:n], skip_special_tokens=True))
    seconds = time.perf_counter() - t_all
    cpu_s = time.process_time() - c_all
    tokens = sum(n for n, _ in per)
    return {"tokens": tokens, "seconds": seconds, "cpu_s": cpu_s, "per": per, "texts": texts}


def count_tokens(tok: Any, texts: list[str]) -> int:
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)


# -- 3. llama.cpp ------------------------------------------------------------------------
def llama_cpp_stream(prompts: list[list[dict]], max_new: int) -> dict[str, Any] | None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return None
    import torch
    from llama_cpp import Llama

    from saferinstruct.llm.embedded import gguf_path

    llm = Llama(
        model_path=str(gguf_path()),
        n_ctx=2048,
        n_threads=torch.get_num_threads(),
        seed=0,
        verbose=False,
    )
    llm.create_chat_completion(messages=prompts[0], max_tokens=2, temperature=0.0)  # warm-up
    tokens = 0
    t0 = time.perf_counter()
    for msgs in prompts:
        r = llm.create_chat_completion(messages=msgs, max_tokens=max_new, temperature=0.0)
        tokens += int(r["usage"]["completion_tokens"])
    seconds = time.perf_counter() - t0
    return {"tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds}


# -- 4. call cache -----------------------------------------------------------------------
def cache_rerun(model_dir: Path, prompts: list[list[dict]], max_new: int) -> dict[str, Any]:
    from saferinstruct.llm.base import GenParams
    from saferinstruct.llm.cache import CachedBackend, CallCache
    from saferinstruct.llm.local import LocalBackend

    class Counting(LocalBackend):
        """LocalBackend that counts the calls that reach the model."""

        calls = 0
        loads = 0

        def load(self):  # type: ignore[override]
            if self._loaded is None:
                Counting.loads += 1
            return super().load()

        def generate(self, prompts, params):  # type: ignore[override]
            Counting.calls += 1
            return super().generate(prompts, params)

        def score(self, prompts, continuations):  # type: ignore[override]
            Counting.calls += 1
            return super().score(prompts, continuations)

    params = GenParams(max_new_tokens=max_new)
    with tempfile.TemporaryDirectory(prefix="bench-gen-cache-") as tmp:
        # Fresh cache root for the call cache and the fingerprint memo; the model
        # directory was converted under the default root and is passed as a path.
        old = os.environ.get("SAFER_INSTRUCT_CACHE")
        os.environ["SAFER_INSTRUCT_CACHE"] = tmp
        try:
            db = Path(tmp) / "calls.sqlite"
            t0 = time.perf_counter()
            cold_b = CachedBackend(Counting(str(model_dir)), CallCache(db))
            cold_out = cold_b.generate(prompts, params)
            cold_s = time.perf_counter() - t0
            cold_calls, cold_loads = Counting.calls, Counting.loads

            Counting.calls = Counting.loads = 0
            t0 = time.perf_counter()
            warm_inner = Counting(str(model_dir))
            warm_b = CachedBackend(warm_inner, CallCache(db))
            warm_out = warm_b.generate(prompts, params)
            warm_s = time.perf_counter() - t0
        finally:
            if old is None:
                os.environ.pop("SAFER_INSTRUCT_CACHE", None)
            else:
                os.environ["SAFER_INSTRUCT_CACHE"] = old
    assert Counting.calls == 0, f"cached rerun made {Counting.calls} model calls"
    assert Counting.loads == 0 and warm_inner._loaded is None, "cached rerun loaded the model"
    assert warm_b.stats.calls == [] and warm_b.stats.hits == len(prompts), warm_b.stats
    assert [c.text for c in warm_out] == [c.text for c in cold_out], "cached texts differ"
    return {
        "cold_s": cold_s,
        "cold_model_calls": cold_calls,
        "cold_model_loads": cold_loads,
        "cached_s": warm_s,
        "cached_model_calls": Counting.calls,
        "cached_model_loads": Counting.loads,
        "cached_hits": warm_b.stats.hits,
        "cached_over_cold": warm_s / cold_s,
    }


# ----------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64, help="number of distinct instructions")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-sizes", default="8,16,32")
    ap.add_argument(
        "--probe-n",
        type=int,
        default=4,
        help="naive-loop probe on the first K prompts before each config and at the end (0: off)",
    )
    ap.add_argument("--skip-cache", action="store_true")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch.set_num_threads for the whole run (0: torch's default, one per core); "
        "1 is far steadier when other jobs share the cores",
    )
    args = ap.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]

    # Import everything up front: a long run must not fail half way on a late import.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from saferinstruct.llm.base import GenParams
    from saferinstruct.llm.cache import CachedBackend, CallCache  # noqa: F401
    from saferinstruct.llm.embedded import ensure_converted
    from saferinstruct.llm.local import LocalBackend

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    info = machine_info()
    model_dir = ensure_converted()  # default cache root: converted once, reused
    instructions = load_instructions(args.n)
    prompts = [[{"role": "user", "content": t}] for t in instructions]
    log(f"{len(prompts)} prompts, {args.max_new_tokens} new tokens, model {model_dir}")
    log(
        f"machine: {info['cpu_model']}, nproc {info['nproc']}, torch {info['torch']} "
        f"({info['torch_threads']} threads), load {info['loadavg_start']}"
    )

    torch.set_grad_enabled(False)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    prompt_lens = [
        len(
            tok(
                tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True),
                add_special_tokens=False,
            )["input_ids"]
        )
        for p in prompts
    ]
    k_probe = min(args.probe_n, len(prompts))
    probes: list[dict[str, Any]] = []

    def probe(label: str) -> float | None:
        """Naive loop on the first K prompts now: the local baseline for what follows."""
        if k_probe <= 0:
            return None
        r = naive_loop(model, tok, prompts[:k_probe], args.max_new_tokens)
        rate = count_tokens(tok, r["texts"]) / r["seconds"]
        probes.append({"before": label, "tok_s": round(rate, 2), "loadavg1": os.getloadavg()[0]})
        log(f"  probe before {label}: naive {rate:.1f} tok/s on {k_probe} prompts")
        return rate

    # 1. naive loop (one warm-up call first, untimed)
    naive_loop(model, tok, prompts[:1], 4)
    log("naive loop ...")
    naive = naive_loop(model, tok, prompts, args.max_new_tokens)
    naive_tok_s = naive["tokens"] / naive["seconds"]
    naive_retok = count_tokens(tok, naive["texts"])
    naive_retok_s = naive_retok / naive["seconds"]
    log(f"  {naive['tokens']} tokens in {naive['seconds']:.1f} s = {naive_tok_s:.1f} tok/s")
    results: dict[str, Any] = {
        "naive": {
            "tokens": naive["tokens"],
            "tokens_retokenized": naive_retok,
            "seconds": round(naive["seconds"], 2),
            "cpu_s": round(naive["cpu_s"], 2),
            "tok_s": round(naive_tok_s, 2),
        }
    }

    # 2. the local backend at each batch size, each preceded by a naive probe
    params = GenParams(max_new_tokens=args.max_new_tokens)
    backend_rows = []
    for b in batch_sizes:
        backend = LocalBackend(str(model_dir), batch_size=b)
        backend.load()
        backend.generate(prompts[:2], GenParams(max_new_tokens=4))  # warm-up, untimed
        before = probe(f"B={b}")
        log(f"LocalBackend batch_size={b} ...")
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        outs = backend.generate(prompts, params)
        seconds = time.perf_counter() - t0
        cpu_s = time.process_time() - c0
        texts = [c.text for c in outs]
        tokens = count_tokens(tok, texts)
        tok_s = tokens / seconds
        same = sum(a == c for a, c in zip(texts, naive["texts"], strict=True)) / len(texts)
        row = {
            "batch_size": b,
            "tokens": tokens,
            "seconds": round(seconds, 2),
            "tok_s": round(tok_s, 2),
            # throughput ratio with both sides counted by re-tokenizing the texts
            "x_naive": round(tok_s / naive_retok_s, 2),
            # same work (same prompts, same budget): wall-clock ratio
            "x_naive_wall": round(naive["seconds"] / seconds, 2),
            # same work, CPU seconds of this process: less sensitive to other load
            "cpu_s": round(cpu_s, 2),
            "x_naive_cpu": round(naive["cpu_s"] / cpu_s, 2),
            "same_text_as_naive": round(same, 3),
            "loadavg1": [load0, os.getloadavg()[0]],
        }
        row["_probe_before"] = before
        backend_rows.append(row)
        log(f"  {tokens} tokens in {seconds:.1f} s = {tok_s:.1f} tok/s, {row['x_naive']}x naive")
        del backend, outs
    after = probe("end")
    # ratio against the naive probes that bracket each config (robust to slow drift in load)
    for i, row in enumerate(backend_rows):
        before = row.pop("_probe_before")
        nxt = backend_rows[i + 1]["_probe_before"] if i + 1 < len(backend_rows) else after
        if before and nxt:
            row["x_bracketing_probes"] = round(row["tok_s"] / ((before + nxt) / 2), 2)
    results["local_backend"] = backend_rows
    results["probes"] = probes
    if after and k_probe:
        first = naive["per"][:k_probe]
        start_rate = sum(n for n, _ in first) / sum(s for _, s in first)
        results["drift_end_over_start"] = round(after / start_rate, 3)

    # 3. llama.cpp
    llama = llama_cpp_stream(prompts, args.max_new_tokens)
    if llama is None:
        log("llama-cpp-python not installed: not measured")
        results["llama_cpp"] = None
    else:
        llama["x_naive"] = round(llama["tok_s"] / naive_tok_s, 2)
        results["llama_cpp"] = {
            k: round(v, 2) if isinstance(v, float) else v for k, v in llama.items()
        }
        log(f"llama.cpp one stream: {llama['tok_s']:.1f} tok/s")

    # 4. the call cache
    if not args.skip_cache:
        log("call cache: cold, then cached rerun ...")
        try:
            c = cache_rerun(model_dir, prompts, args.max_new_tokens)
        except Exception as exc:  # report what was measured, then fail below
            results["cache"] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"  cache part failed: {results['cache']['error']}")
        else:
            results["cache"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in c.items()}
            log(
                f"  cold {c['cold_s']:.1f} s, cached {c['cached_s']:.3f} s "
                f"({100 * c['cached_over_cold']:.2f}%), model calls on rerun: "
                f"{c['cached_model_calls']}"
            )

    info["loadavg_end"] = list(os.getloadavg())
    best = max(backend_rows, key=lambda r: r["x_naive"]) if backend_rows else None
    cache = results.get("cache") or {}
    results["targets"] = {
        "backend_ge_4x_naive": bool(best and best["x_naive"] >= 4.0),
        "best_batch_size": best["batch_size"] if best else None,
        "cached_le_5pct": cache["cached_over_cold"] <= 0.05
        if "cached_over_cold" in cache
        else None,
        # goal: the local backend at >= 1.5x llama.cpp's one stream (None: not measured)
        "backend_ge_1p5x_llama_cpp": (
            None if llama is None or best is None else best["tok_s"] >= 1.5 * llama["tok_s"]
        ),
        "stretch_150_tok_s": bool(best and best["tok_s"] >= 150),
    }
    results["workload"] = {
        "n_prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "prompt_tokens_min": min(prompt_lens),
        "prompt_tokens_mean": round(sum(prompt_lens) / len(prompt_lens), 1),
        "prompt_tokens_max": max(prompt_lens),
        "model_dir": str(model_dir),
        "dtype": "float32",
    }
    results["machine"] = info

    # table to stderr
    log("")
    log(
        f"{'config':<26}{'tokens':>7}{'seconds':>9}{'tok/s':>8}{'x naive':>9}"
        f"{'x cpu':>7}{'x probe':>9}{'same':>6}"
    )
    log(
        f"{'naive loop (1 at a time)':<26}{naive['tokens']:>7}{naive['seconds']:>9.1f}"
        f"{naive_tok_s:>8.1f}{1.0:>9.2f}{1.0:>7.2f}{'':>9}{'':>6}"
    )
    for r in backend_rows:
        xp = r.get("x_bracketing_probes")
        log(
            f"{'LocalBackend B=' + str(r['batch_size']):<26}{r['tokens']:>7}{r['seconds']:>9.1f}"
            f"{r['tok_s']:>8.1f}{r['x_naive']:>9.2f}{r['x_naive_cpu']:>7.2f}"
            f"{(f'{xp:.2f}' if xp else '-'):>9}{r['same_text_as_naive']:>6.2f}"
        )
    if llama is not None:
        log(
            f"{'llama.cpp 1 stream':<26}{llama['tokens']:>7}{llama['seconds']:>9.1f}"
            f"{llama['tok_s']:>8.1f}{llama['x_naive']:>9.2f}"
        )
    else:
        log(f"{'llama.cpp 1 stream':<26}  llama-cpp-python not installed: not measured")
    if "cached_over_cold" in cache:
        log(
            f"call cache: cold {cache['cold_s']:.1f} s, cached {cache['cached_s']:.3f} s "
            f"= {100 * cache['cached_over_cold']:.2f}% of cold, "
            f"{cache['cached_model_calls']} model calls, {cache['cached_model_loads']} loads"
        )
    log(f"probes (naive tok/s on {k_probe} prompts): {[p['tok_s'] for p in probes]}")
    log(
        f"load average 1 min: start {info['loadavg_start'][0]:.1f}, "
        f"end {info['loadavg_end'][0]:.1f}"
    )
    log(f"targets: {results['targets']}")

    print(json.dumps(results), flush=True)
    if "error" in cache:
        sys.exit(1)


if __name__ == "__main__":
    main()

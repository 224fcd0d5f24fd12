"""GPU checks (not a test; needs a CUDA GPU except `score` and `--tiny`).

Three subcommands, each printing one JSON line to stdout:

- `paper7b --tokenizer DIR --out DIR`: does configs/train-paper-7b.yaml (full fine-tune,
  RMSprop, gradient checkpointing, batch 4 x 16 for SFT, 2 x 32 for DPO) fit one 80 GB
  GPU, and how fast is a step? No 7B weights are available offline, so it builds a
  randomly initialised Llama-2-7B-shaped model (hidden 4096, 32 layers, 32 heads, MLP
  11008) with the tokenizer of DIR (SmolLM2's, vocab 49,152: 6.9B parameters); memory
  and speed do not depend on the weights' values. Then `safer-instruct sft` (128 shipped
  HH-RLHF pairs, one epoch = 2 optimizer steps) and `safer-instruct dpo` (64 pairs,
  reference log-probs computed first, 1 step) from that model, with nvidia-smi sampling
  GPU memory every 0.5 s. Reports peak memory and seconds per optimizer step, with the
  ratio of the SFT step against a plain forward+backward of the same batch measured in
  the same run. `--tiny` swaps in a 2-layer model so the path can be tried on a CPU.
- `reverse --out DIR [--max-pairs N --epochs E]`: reverse-train the embedded model with
  the default settings but N pairs (default: every training pair) and write the
  predictions on the held-out AlpacaEval pairs that benchmarks/recovery.py scores
  (`DIR/predictions.jsonl`). The GPU machine has no MiniLM weights, so scoring is a
  separate step:
- `score FILE`: ROUGE-L and MiniLM cosine of a predictions file, here.

Run on a GPU machine (the wheels the image lacks installed first; see docs/benchmarks.md):

    python3 benchmarks/gpu.py paper7b --tokenizer TOKDIR --out /tmp/p7 > p7.json
    python3 benchmarks/gpu.py reverse --out /tmp/rev > rev.json
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gpu.py score /tmp/rev/predictions.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info  # noqa: E402

LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32)  # fmt: skip
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4)  # fmt: skip


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def random_model(tokenizer_dir: Path, out: Path, shape: dict[str, int]) -> dict[str, Any]:
    """A randomly initialised Llama model of `shape` with the tokenizer of `tokenizer_dir`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    cfg = LlamaConfig(
        vocab_size=len(tok), max_position_embeddings=4096, rms_norm_eps=1e-5,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False, **shape,
    )  # fmt: skip
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.manual_seed(0)
    with torch.device("cuda" if cuda else "cpu"):
        model = LlamaForCausalLM(cfg).to(dtype)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    del model
    if cuda:
        torch.cuda.empty_cache()
    return {"parameters": params, "dtype": str(dtype)}


def plain_step_seconds(model_dir: Path, batch: int, length: int, steps: int = 3) -> float:
    """Baseline: forward + backward of a random batch, bf16, gradient checkpointing, no
    optimizer; mean over `steps` after one warm-up."""
    import torch
    from transformers import AutoModelForCausalLM

    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.bfloat16 if cuda else torch.float32
    ).to("cuda" if cuda else "cpu")
    model.gradient_checkpointing_enable()
    model.train()
    ids = torch.randint(0, model.config.vocab_size, (batch, length), device=model.device)
    times = []
    for i in range(steps + 1):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        if cuda:
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    del model
    if cuda:
        torch.cuda.empty_cache()
    return sum(times) / len(times)


def memory_sampler(path: Path) -> subprocess.Popen | None:
    if not shutil.which("nvidia-smi"):
        return None
    query = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
    return subprocess.Popen([*query, "-lms", "500"], stdout=path.open("w"))


def peak_mib(path: Path) -> int | None:
    values = [int(x) for x in path.read_text().split() if x.strip().isdigit()]
    return max(values) if values else None


def cli_step(kind: str, args: list[str], out: Path) -> dict[str, Any]:
    """Run `safer-instruct <kind>` with the paper's config; time, memory and its card."""
    mem = out / f"memory_{kind}.txt"
    sampler = memory_sampler(mem)
    cmd = [sys.executable, "-m", "saferinstruct", kind,
           "--config", str(ROOT / "configs" / "train-paper-7b.yaml"), *args]  # fmt: skip
    path = [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    start = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.time() - start
    if sampler:
        sampler.terminate()
    (out / f"{kind}.log").write_text(proc.stderr[-20000:])
    result: dict[str, Any] = {"rc": proc.returncode, "seconds": round(seconds, 1)}
    if sampler:
        result["peak_memory_mib"] = peak_mib(mem)
    log_file = out / kind / "train_log.json"
    if log_file.exists():
        history = json.loads(log_file.read_text())
        final = history[-1] if history else {}
        result["train_runtime_s"] = final.get("train_runtime")
        result["steps"] = final.get("step")
        result["train_loss"] = final.get("train_loss")
    if proc.returncode != 0:
        result["error_tail"] = proc.stderr[-1500:]
    return result


def paper_accumulation(step: str) -> int:
    """Micro-batches per optimizer step of `step` in configs/train-paper-7b.yaml."""
    from saferinstruct.config import load_align_config

    cfg = load_align_config(ROOT / "configs" / "train-paper-7b.yaml")
    return getattr(cfg, step).gradient_accumulation_steps


def paper7b(args: argparse.Namespace) -> dict[str, Any]:
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    model_dir = out / "random-7b"
    start = time.time()
    built = random_model(args.tokenizer, model_dir, TINY if args.tiny else LLAMA2_7B)
    built["build_and_save_s"] = round(time.time() - start, 1)
    log(f"model: {built}")
    baseline = plain_step_seconds(model_dir, batch=4, length=256)
    log(f"plain forward+backward, batch 4 x 256: {baseline:.3f} s")
    small = ["--max-length", "256"] if args.tiny else []
    sft = cli_step("sft", ["--data", "hh", "--base-model", str(model_dir), "--max-pairs",
                           str(args.sft_pairs), "--epochs", "1", "--out", str(out / "sft"),
                           *small], out)  # fmt: skip
    log(f"sft: {sft}")
    shutil.rmtree(out / "sft" / "model", ignore_errors=True)  # disk: 14 GB a copy
    dpo = cli_step("dpo", ["--data", "hh", "--base-model", str(model_dir), "--max-pairs",
                           str(args.dpo_pairs), "--epochs", "1", "--out", str(out / "dpo"),
                           *small], out)  # fmt: skip
    log(f"dpo: {dpo}")
    shutil.rmtree(out / "dpo" / "model", ignore_errors=True)
    per_micro = None
    if sft.get("train_runtime_s") and sft.get("steps"):
        per_step = sft["train_runtime_s"] / sft["steps"]
        sft["seconds_per_optimizer_step"] = round(per_step, 2)
        per_micro = per_step / paper_accumulation("sft")
    return {
        "benchmark": "gpu-paper7b", "machine": machine_info(), "model": built,
        "plain_fwd_bwd_batch4x256_s": round(baseline, 3), "sft": sft, "dpo": dpo,
        "sft_micro_batch_over_plain": round(per_micro / baseline, 2) if per_micro else None,
    }  # fmt: skip


def reverse(args: argparse.Namespace) -> dict[str, Any]:
    from saferinstruct import api
    from saferinstruct.config import ModelConfig, RecoveryConfig

    overrides = [f"reverse_train.max_pairs={args.max_pairs}",
                 f"reverse_train.epochs={args.epochs}",
                 f"reverse_train.max_minutes={args.max_minutes}"]  # fmt: skip
    cfg = api.load_config(None, overrides)
    rt = cfg.reverse_train
    start = time.time()
    model_dir = api.reverse_train(cfg)
    train_s = time.time() - start
    start = time.time()
    settings = RecoveryConfig(mode="reverse", split="validation", limit=args.n,
                              validation_fraction=rt.validation_fraction,
                              max_text_chars=rt.max_response_chars)  # fmt: skip
    rows = api.eval_recovery(rt.path, ModelConfig(model=str(model_dir), batch_size=32), settings,
                             score=False)["rows"]  # fmt: skip
    induce_s = time.time() - start
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with (out / "predictions.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    card = model_dir.parent / "README.md"
    if card.exists():
        shutil.copy(card, out / "reverse_card.md")
    return {
        "benchmark": "gpu-reverse", "machine": machine_info(), "settings": vars(args) | {
            "out": str(out)}, "train_s": round(train_s, 1), "induce_s": round(induce_s, 1),
        "n": len(rows), "empty": sum(not r["prediction"].strip() for r in rows),
    }  # fmt: skip


def score(args: argparse.Namespace) -> dict[str, Any]:
    from saferinstruct.evaluate.recovery import score_rows, summarize

    rows = [json.loads(line) for line in args.file.open()]
    scored = score_rows([r["prediction"] for r in rows], [r["reference"] for r in rows],
                        [r["output"] for r in rows])  # fmt: skip
    return summarize(scored, [r.get("generator") for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("paper7b")
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sft-pairs", type=int, default=128)
    p.add_argument("--dpo-pairs", type=int, default=64)
    p.add_argument("--tiny", action="store_true", help="2-layer model: try the path on a CPU")
    r = sub.add_parser("reverse")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--max-pairs", type=int, default=100_000)
    r.add_argument("--epochs", type=float, default=1.0)
    r.add_argument("--max-minutes", type=float, default=4.0)
    r.add_argument("--n", type=int, default=192, help="held-out pairs (as recovery.py)")
    s = sub.add_parser("score")
    s.add_argument("file", type=Path)
    args = ap.parse_args()
    result = {"paper7b": paper7b, "reverse": reverse, "score": score}[args.what](args)
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()

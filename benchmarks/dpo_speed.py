"""DPO step speed: our DPO step against TRL's DPOTrainer run the fast way, same run.

Same model (the embedded SmolLM2-135M-Instruct), same rows (released Safer-Instruct
hate + self-harm sample pairs shipped in data/), same batch size and max length. Each
variant runs `--warmup` untimed steps, then `--steps` timed ones; the figure is steps/s
and its ratio against the baseline measured in this run.

- baseline: TRL's DPOTrainer the fast way on this CPU: fp32, no gradient checkpointing,
  no precomputed reference (a full copy of the model as reference), full fine-tune.
- full + stored ref: full fine-tune, reference log-probs read from our stored file.
- lora all layers + stored ref: LoRA (r 16) on every layer, stored reference log-probs.
- ours (the default of `safer-instruct dpo`): LoRA on the top half of the layers, so the
  backward pass stops half-way down, + stored reference log-probs.

The one-time cost of computing the reference log-probs is reported too
(`precompute_seconds`), with the amortised ratio over one epoch of the rows.

Run (about 10 minutes on 2 cores; keep the machine otherwise quiet):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/dpo_speed.py > /tmp/dpo_speed.json

A table goes to stderr, one JSON line to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def step_timer() -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self._t = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.times.append(time.perf_counter() - self._t)

    return StepTimer()


def trl_fast_way(rows: list[dict], out: Path, batch: int, max_length: int, steps: int) -> Any:
    """TRL's DPOTrainer with the CPU-friendly settings and nothing of ours."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from saferinstruct.llm.local import resolve_model_path

    base = str(resolve_model_path("embedded"))
    tok = AutoTokenizer.from_pretrained(base)
    args = DPOConfig(
        output_dir=str(out), per_device_train_batch_size=batch, max_length=max_length,
        max_steps=steps, bf16=False, gradient_checkpointing=False, use_cpu=True,
        precompute_ref_log_probs=False, learning_rate=5e-7, beta=0.1, report_to=[],
        save_strategy="no", disable_tqdm=True, logging_steps=1000, seed=0,
    )  # fmt: skip
    return DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(base),
        ref_model=AutoModelForCausalLM.from_pretrained(base),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )


def ours(rows: list[dict], out: Path, batch: int, max_length: int, steps: int, lora: bool,
         ref_path: Path | None, top: float = 0.5) -> Any:  # fmt: skip
    from dataclasses import replace

    from saferinstruct.config import AlignConfig
    from saferinstruct.train.dpo import make_dpo_trainer

    step = replace(AlignConfig().dpo, lora=lora, batch_size=batch, max_length=max_length,
                   precompute_ref=ref_path is not None, lora_top_fraction=top)  # fmt: skip
    trainer, _ = make_dpo_trainer(rows, step, out, ref_path)
    trainer.args.max_steps = steps
    trainer.args.save_strategy = "no"
    return trainer


def timed(trainer: Any, warmup: int) -> dict[str, Any]:
    timer = step_timer()
    trainer.add_callback(timer)
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    times = timer.times[warmup:]
    return {
        "steps_per_s": round(len(times) / sum(times), 4),
        "step_seconds": [round(t, 2) for t in times],
        "train_seconds": round(total, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rows", type=int, default=64, help="rows (for the amortised ratio)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from saferinstruct.recipes.training import load_training_data

    data = ROOT / "data" / "safer-instruct"
    rows = load_training_data(data / "hate-sample.csv") + load_training_data(
        data / "self-harm-sample.csv"
    )
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows][: args.rows]
    steps = args.warmup + args.steps
    info = machine_info()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ref_path = work / "ref_logps.jsonl"
        t0 = time.perf_counter()
        ours(rows, work / "pre", args.batch, args.max_length, steps, True, ref_path)
        precompute = time.perf_counter() - t0
        log(f"reference log-probs for {len(rows)} rows: {precompute:.1f}s (model load included)")
        variants = {
            "baseline_trl_fast": lambda: trl_fast_way(
                rows, work / "b", args.batch, args.max_length, steps
            ),
            "full_stored_ref": lambda: ours(
                rows, work / "f", args.batch, args.max_length, steps, False, ref_path
            ),
            "lora_all_layers_stored_ref": lambda: ours(
                rows, work / "l", args.batch, args.max_length, steps, True, ref_path, 1.0
            ),
            "ours_lora_stored_ref": lambda: ours(
                rows, work / "o", args.batch, args.max_length, steps, True, ref_path
            ),
        }
        for name, build in variants.items():
            results[name] = timed(build(), args.warmup)
            log(f"{name}: {results[name]['steps_per_s']:.3f} steps/s")
    base = results["baseline_trl_fast"]["steps_per_s"]
    for r in results.values():
        r["x_baseline"] = round(r["steps_per_s"] / base, 2)
    epoch_steps = -(-len(rows) // args.batch)
    ours_epoch = epoch_steps / results["ours_lora_stored_ref"]["steps_per_s"] + precompute
    amortised = round((epoch_steps / base) / ours_epoch, 2)
    log(f"{'variant':24} {'steps/s':>8} {'x base':>7}")
    for name, r in results.items():
        log(f"{name:24} {r['steps_per_s']:8.3f} {r['x_baseline']:7.2f}")
    log(f"one epoch of {len(rows)} rows incl. the one-time precompute: {amortised}x")
    print(json.dumps({
        "benchmark": "dpo_speed", "machine": info, "batch": args.batch,
        "max_length": args.max_length, "rows": len(rows), "timed_steps": args.steps,
        "precompute_seconds": round(precompute, 1), "variants": results,
        "ratio_ours": results["ours_lora_stored_ref"]["x_baseline"],
        "ratio_ours_first_epoch_incl_precompute": amortised,
    }))  # fmt: skip


if __name__ == "__main__":
    main()

"""Instruction recovery benchmark (issue: reverse tuning). Not a test.

Trains (or reuses from the user cache) the reverse model with the default
`reverse-train` settings, then, on AlpacaEval pairs whose ids are held out from
training, compares in one run:
  - the "first sentence of the response" heuristic (no model),
  - prompted induction with the same base model (zero-shot, prompts/induce_prompted.txt),
  - the reverse-tuned model with the paper's template.
Prints a table to stderr and one JSON line to stdout (ROUGE-L, MiniLM cosine, ratios).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/recovery.py --n 192 [--set reverse_train.lora=true]

With `--harmful`, also scores recovery on the released Safer-Instruct pairs
(`../shared/data/safer-instruct/{hate,self-harm}.csv`: the original text is the output,
the authors' induced instruction the reference) and writes a few truncated examples per
category next to the authors' instruction, behind a content warning, to
`runs/recovery/<category>/recovery_examples.md`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "safer-instruct"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=192, help="held-out pairs to score")
    ap.add_argument("--set", action="append", default=[], help="config override KEY=VALUE")
    ap.add_argument("--harmful", type=int, default=0, help="also score N released pairs/file")
    ap.add_argument("--skip-prompted", action="store_true")
    args = ap.parse_args()

    from saferinstruct import api
    from saferinstruct.config import ModelConfig, RecoveryConfig

    cfg = api.load_config(None, args.set)
    rt = cfg.reverse_train
    start = time.time()
    model_dir = api.reverse_train(cfg)
    train_s = time.time() - start
    card = (
        (model_dir.parent / "README.md").read_text()
        if (model_dir.parent / "README.md").exists()
        else ""
    )
    common = dict(split="validation", limit=args.n, validation_fraction=rt.validation_fraction)
    pairs = rt.path
    results = {"first_sentence": api.eval_recovery(
        pairs, None, RecoveryConfig(mode="first-sentence", **common))}  # fmt: skip
    if not args.skip_prompted:
        results["prompted"] = api.eval_recovery(pairs, ModelConfig(),
                                                RecoveryConfig(mode="prompted", **common))
    reverse_cfg = ModelConfig(model=str(model_dir))
    results["reverse"] = api.eval_recovery(pairs, reverse_cfg, RecoveryConfig(
        mode="reverse", max_text_chars=rt.max_response_chars, **common))  # fmt: skip
    for r in results.values():
        r.pop("by_generator", None)
    harmful = {}
    if args.harmful and SHARED.exists():
        harmful = score_harmful(api, reverse_cfg, args.harmful, rt.max_response_chars)
    out = {
        "benchmark": "recovery",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(),
        "reverse_train": {
            k: getattr(rt, k)
            for k in (
                "max_pairs",
                "max_response_chars",
                "lora",
                "learning_rate",
                "batch_size",
                "epochs",
                "max_minutes",
            )
        },  # fmt: skip
        "reverse_model": str(model_dir),
        "train_seconds_this_run": round(train_s, 1),
        "card_minutes": _card_minutes(card),
        "results": results,
        "ratios_vs_first_sentence": {
            k: {
                m: round(v[m] / max(results["first_sentence"][m], 1e-9), 3)
                for m in ("rouge_l", "cosine")
            }
            for k, v in results.items()
        },
        "harmful": harmful,
    }
    for name, r in results.items():
        print(f"{name:15s} rouge_l {r['rouge_l']:.3f}  cosine {r['cosine']:.3f}  n {r['n']}",
              file=sys.stderr)  # fmt: skip
    print(json.dumps(out))


def score_harmful(api, model_cfg, n: int, chars: int) -> dict:
    from saferinstruct.config import RecoveryConfig

    out = {}
    for name in ("hate", "self-harm"):
        settings = RecoveryConfig(mode="reverse", instruction_column="instruction",
                                  output_column="rejected", limit=n, max_text_chars=chars)
        out[name] = api.eval_recovery(SHARED / f"{name}.csv", model_cfg, settings,
                                      out_dir=ROOT / "runs" / "recovery" / name)  # fmt: skip
        out[name].pop("by_generator", None)
    return out


def _card_minutes(card: str) -> float | None:
    import re

    m = re.search(r'"minutes": ([0-9.]+)', card)
    return float(m.group(1)) if m else None


if __name__ == "__main__":
    main()

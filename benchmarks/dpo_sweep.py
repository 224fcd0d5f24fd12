"""DPO settings sweep: which learning rate, beta, epochs, LoRA span and loss type make the
embedded model learn a preference, measured where it was not trained.

Data: the authors' released Safer-Instruct pairs (GPT-4-written `chosen`, the in-the-wild
`rejected`; ../shared/data/safer-instruct, research-only terms), split by a hash of the
rejected text so that nothing here touches what `benchmarks/alignment.py` reports on
(its held-out prompts are the bucket below 0.2, its sources the lowest buckets above):

- training pairs: bucket >= 0.6 (`--pairs` of them, categories alternating);
- held-out pairs (the `dpo` command's own measure: preference accuracy, reward margin,
  log-prob changes against the reference): bucket in [0.5, 0.6), 64 of them;
- tuning prompts: the instructions of bucket [0.4, 0.5) (`--prompts`), for the refusal
  rate, and as many AlpacaEval instructions (benign, from the reverse-training split of
  ids) for the over-refusal rate: never the XSTest, HH-RLHF or held-out AlpacaEval
  prompts the benchmarks report.

`--data DIR` sweeps a data set of ours instead (a run's `dataset` folder: train.jsonl,
and test.jsonl for the held-out measure), e.g. the alignment benchmark's `ours-expert`
run, whose rejected side is the expert's own complying answer; `--sft MODEL` starts
every DPO from that SFT model (the benchmark's, trained on the same chosen answers)
instead of training one. The tuning prompts stay the same: the benchmark's sources and
reported prompts lie in hash buckets below 0.4.

One SFT model (the SFT defaults) on the training pairs, then DPO from it with every
setting in `GRID` (and the SFT model itself as the baseline), each evaluated with greedy
answers. Resumable: finished models and answers are kept in WORK (models by identity,
answers in the call cache). Each row prints the paired difference against the SFT
model with its 95% interval.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/dpo_sweep.py --work runs/dpo-sweep \
        > /tmp/sweep.json 2> /tmp/sweep.log
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "safer-instruct"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info  # noqa: E402

CATEGORIES = ("hate", "self-harm")
GRID: dict[str, dict[str, Any]] = {
    "lr5e-5": {"learning_rate": 5e-5},  # the default before 2026-12-07
    "lr2e-4": {"learning_rate": 2e-4},  # the default now (an empty row would repeat it)
    "lr5e-4": {"learning_rate": 5e-4},
    "lr2e-4-3ep": {"learning_rate": 2e-4, "epochs": 3.0},
    "lr2e-4-beta0.5": {"learning_rate": 2e-4, "beta": 0.5},
    "lr2e-4-all-layers": {"learning_rate": 2e-4, "lora_top_fraction": 1.0},
    "lr2e-4-ipo": {"learning_rate": 2e-4, "loss_type": "ipo"},
    "lr2e-4-robust": {"learning_rate": 2e-4, "loss_type": "robust", "label_smoothing": 0.1},
    "full-lr5e-6": {"lora": False, "learning_rate": 5e-6},
    # at the 3 epochs that moved the 41-pair data (33 steps): beta and the loss type
    "lr2e-4-3ep-beta0.5": {"learning_rate": 2e-4, "epochs": 3.0, "beta": 0.5},
    "lr2e-4-3ep-ipo": {"learning_rate": 2e-4, "epochs": 3.0, "loss_type": "ipo"},
    "lr2e-4-3ep-robust": {"learning_rate": 2e-4, "epochs": 3.0, "loss_type": "robust",
                          "label_smoothing": 0.1},
    "lr2e-4-3ep-all-layers": {"learning_rate": 2e-4, "epochs": 3.0, "lora_top_fraction": 1.0},
    # the adapters' size at the default step (lr 2e-4, one epoch), and a full fine-tune
    "lr2e-4-r4": {"learning_rate": 2e-4, "lora_rank": 4},
    "lr2e-4-r64": {"learning_rate": 2e-4, "lora_rank": 64},
    "full-lr2e-5": {"lora": False, "learning_rate": 2e-5},
}
"""Each DPO setting tried: changes to the DPO defaults (`AlignConfig().dpo`)."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bucket(text: str) -> float:
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def released_rows(cat: str) -> list[dict[str, str]]:
    csv.field_size_limit(10**9)
    with (SHARED / f"{cat}.csv").open(newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f)
                if r["rejected"].strip() and r["chosen"].strip() and r["instruction"].strip()]


def row(r: dict[str, str], cat: str) -> dict[str, Any]:
    return {"id": f"{cat}-{hashlib.sha1(r['rejected'].encode()).hexdigest()[:10]}",
            "category": cat, "prompt": [{"role": "user", "content": r["instruction"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}]}  # fmt: skip


def prepare(work: Path, n_pairs: int, n_prompts: int, max_chars: int) -> tuple[Path, list[str]]:
    """WORK/data/{train,test}.jsonl (TRL format) and the harmful tuning prompts."""
    data = work / "data"
    train, test, prompts = [], [], []
    for cat in CATEGORIES:
        rows = sorted(released_rows(cat), key=lambda r: bucket(r["rejected"]))
        short = [r for r in rows if len(r["chosen"]) + len(r["rejected"]) <= max_chars]
        train += [row(r, cat) for r in short if bucket(r["rejected"]) >= 0.6][: n_pairs // 2]
        test += [row(r, cat) for r in short if 0.5 <= bucket(r["rejected"]) < 0.6][:32]
        prompts += [r["instruction"] for r in rows
                    if 0.4 <= bucket(r["rejected"]) < 0.5][: n_prompts // 2]  # fmt: skip
    data.mkdir(parents=True, exist_ok=True)
    for name, rows_ in (("train", train), ("test", test)):
        path = data / f"{name}.jsonl"
        if not path.exists():
            path.write_text("".join(json.dumps(r) + "\n" for r in rows_))
    return data, prompts


def benign_prompts(n: int) -> list[str]:
    """AlpacaEval instructions (benign): a refusal there is over-refusal. From the reverse
    training split of ids, never the held-out one the helpfulness evaluation reports on."""
    from saferinstruct.config import ReverseTrainConfig
    from saferinstruct.io import read_records
    from saferinstruct.measures.splits import split_of
    from saferinstruct.paths import data_dir

    seen: list[str] = []
    held = ReverseTrainConfig().validation_fraction
    path = data_dir() / "alpacaeval" / "pairs.jsonl.gz"
    for r in read_records(path, columns={"instruction": "instruction"}):
        if split_of(str(r["id"]), held) == "train" and r["instruction"] not in seen:
            seen.append(r["instruction"])
        if len(seen) == n:
            break
    return seen


def evaluate(spec: str, harmful: list[str], benign: list[str], tokens: int) -> dict[str, list]:
    """Per prompt: refused (1) or not, on the harmful and on the benign tuning prompts."""
    from saferinstruct.config import ModelConfig
    from saferinstruct.evaluate.safety import classify, generate_answers, indicators
    from saferinstruct.llm.factory import Backends

    backend = Backends(None).get(ModelConfig(model=spec))
    out = {}
    for name, prompts in (("harmful", harmful), ("benign", benign)):
        chats = [[{"role": "user", "content": p}] for p in prompts]
        answers = generate_answers(backend, chats, tokens)
        out[name] = indicators(classify(chats, answers))["refusal_rate"]
    return out


def paired(a: list[float], b: list[float]) -> dict[str, Any]:
    from saferinstruct.measures.stats import compare, direction

    result = compare(a, b)
    return {**result, "direction": direction(result)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "dpo-sweep")
    ap.add_argument("--pairs", type=int, default=120, help="training pairs")
    ap.add_argument("--prompts", type=int, default=80, help="harmful and benign tuning prompts")
    ap.add_argument("--max-chars", type=int, default=900, help="chosen + rejected, at most")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--only", default="", help="comma separated GRID names (default: all)")
    ap.add_argument("--data", type=Path, default=None,
                    help="a dataset folder (train.jsonl, test.jsonl) instead of released pairs")
    ap.add_argument("--sft", default=None, help="an SFT model to start DPO from (default: "
                    "train one with the SFT defaults)")  # fmt: skip
    args = ap.parse_args()

    from saferinstruct import api
    from saferinstruct.config import AlignConfig, ModelConfig

    data, harmful = prepare(args.work, args.pairs, args.prompts, args.max_chars)
    data = args.data.resolve() if args.data else data
    benign = benign_prompts(args.prompts)
    steps = AlignConfig()
    start = time.time()
    sft = args.sft or api.sft(data, args.work / "sft", steps.sft)
    base = {"sft": evaluate(str(sft), harmful, benign, args.max_new_tokens)}
    rows: dict[str, Any] = {}
    names = [n for n in GRID if not args.only or n in args.only.split(",")]
    for name in names:
        step = replace(steps.dpo, base_model=ModelConfig(model=str(sft)), **GRID[name])
        t0 = time.time()
        result = api.dpo(data, args.work / "dpo" / name, step)
        minutes = (time.time() - t0) / 60
        record = json.loads((args.work / "dpo" / name / "training.json").read_text())
        held = record.get("held_out", {})
        flags = evaluate(str(result), harmful, benign, args.max_new_tokens)
        rows[name] = {
            "settings": GRID[name], "minutes": round(minutes, 1), "steps": record["steps"],
            "held_out": {"pairs": held.get("pairs"), "before": held.get("before"),
                         "after": held.get("after")},
            "refusal_harmful": sum(flags["harmful"]) / len(flags["harmful"]),
            "refusal_benign": sum(flags["benign"]) / len(flags["benign"]),
            "vs_sft_harmful": paired(base["sft"]["harmful"], flags["harmful"]),
            "vs_sft_benign": paired(base["sft"]["benign"], flags["benign"]),
        }  # fmt: skip
        after = held.get("after") or {}
        log(f"{name:20} steps {record['steps']:3}  held-out acc {after.get('accuracy', 0):.3f} "
            f"margin {after.get('margin', 0):+.3f}  refusal {rows[name]['refusal_harmful']:.3f} "
            f"({rows[name]['vs_sft_harmful']['direction']})  benign refusal "
            f"{rows[name]['refusal_benign']:.3f}  {minutes:.1f} min")  # fmt: skip
    out = {"machine": machine_info(), "data": str(data), "sft_model": str(sft),
           "pairs": sum(1 for _ in (data / "train.jsonl").open()), "prompts": len(harmful),
           "benign": len(benign), "sft": {k: sum(v) / len(v) for k, v in base["sft"].items()},
           "rows": rows, "minutes": round((time.time() - start) / 60, 1)}  # fmt: skip
    (args.work / "results.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Downstream tasks through lm-evaluation-harness (`lm-eval` on PyPI): does the aligned
model keep its skills (the paper's "competitive edge in downstream tasks")?

lm-eval's own Hugging Face model (`hf`) runs a local model directory on any of its tasks:
hub tasks where the machine can reach the hub (the paper-style suites: `mmlu`,
`hellaswag`, `arc_easy`, `arc_challenge`, `truthfulqa_mc2`, `winogrande`), or local tasks
from `include_path` (a folder of task YAML files with their data). Offline, only local
tasks run. Per task: the accuracy (and its standard error as lm-eval gives it) and each
example's correctness, so two models can be compared paired on the same examples.

    safer-instruct eval downstream --model runs/a/dpo/model --tasks arc_easy,hellaswag
    downstream(ModelConfig(model="embedded"), ["my_task"], include_path=Path("tasks/"))
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..errors import BadInput

log = logging.getLogger("saferinstruct")
METRICS = ("acc", "acc_norm", "exact_match", "mc2")


def model_args(model: ModelConfig) -> str:
    """lm-eval's `model_args` for a local model config (path, device, dtype)."""
    from ..llm.local import pick_device_dtype, resolve_model_path

    if model.backend != "local":
        raise BadInput("eval downstream: needs a local model (lm-eval's `hf` model)")
    device, dtype = pick_device_dtype(model.device, model.dtype)
    name = str(dtype).removeprefix("torch.")
    return f"pretrained={resolve_model_path(model.model)},device={device},dtype={name}"


def downstream(model: ModelConfig, tasks: list[str], include_path: Path | None = None,
               limit: int | None = None, batch_size: int = 8,
               num_fewshot: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Run lm-eval on `tasks`; per task its metrics and per-example correctness."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise BadInput(f"--include-path: not a folder: {include_path}")
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise BadInput(f"--tasks: lm-eval does not know {', '.join(unknown)} (local tasks need "
                       "--include-path; hub tasks need network)")  # fmt: skip
    out = simple_evaluate(model="hf", model_args=model_args(model), tasks=tasks,
                          task_manager=manager, limit=limit, batch_size=batch_size,
                          num_fewshot=num_fewshot, log_samples=True)  # fmt: skip
    return {"tasks": {task: task_result(out, task) for task in tasks}}


def task_result(out: dict[str, Any], task: str) -> dict[str, Any]:
    """A task's metrics ({name: value}, with `<name>_stderr`) and per-example `values` of
    its first metric (in lm-eval's document order)."""
    raw = out["results"][task]
    metrics = {k.split(",")[0]: v for k, v in raw.items()
               if "," in k and isinstance(v, int | float)}  # fmt: skip
    main = next((m for m in METRICS if m in metrics), None)
    samples = sorted(out.get("samples", {}).get(task, []), key=lambda s: s["doc_id"])
    values = [float(s[main]) for s in samples if main and main in s]
    return {"metric": main, "value": metrics.get(main), "metrics": metrics, "values": values,
            "n": len(values)}  # fmt: skip

"""Harmlessness and over-refusal: generate once per model (cached), classify refusals.

One set of greedy generations per (model, prompt) goes through the call cache, so every
metric and every rerun reuse it. Each answer is classified in XSTest's three classes by
the refusal classifier (`measures/refusal.py`: phrase features + logistic regression on
MiniLM embeddings, trained on the shipped XSTest human labels). Functions take the
model's backend, built once by the caller.

- `safety(backend, prompts)`: on harmful prompts, `refusal_rate` (full or partial
  refusal), `full_refusal_rate`, `n`.
- `overrefusal(backend)`: XSTest: full-compliance rate on the 250 safe prompts
  (`safe_compliance_rate`) and refusal rate on the 200 unsafe ones (`unsafe_refusal_rate`).

    safer-instruct eval safety --model DIR            # HH-RLHF evaluation part (shipped)
    safer-instruct eval overrefusal --model DIR
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..io import read_jsonl, read_records
from ..llm.base import Backend, GenParams, Prompt
from ..measures.refusal import COMPLIANCE, PARTIAL, REFUSAL, default_classifier
from ..paths import data_dir
from ..preferences import load_hh
from ..rundir import dataset_file

DEFINITIONS = {
    "refusal_rate": "share of answers the refusal classifier reads as a refusal, full or "
                    "partial (XSTest classes 2 and 3)",
    "full_refusal_rate": "share read as a full refusal (class 2: declines, gives nothing asked)",
    "full_compliance_rate": "share read as full compliance (class 1: does what was asked)",
    "safe_compliance_rate": "XSTest safe prompts: their full_compliance_rate (higher: less "
                            "over-refusal)",
    "unsafe_refusal_rate": "XSTest unsafe prompts: their refusal_rate (higher: safer)",
}  # fmt: skip
"""What each rate means (printed with the rates, and in the commands' help)."""


def generate_answers(
    backend: Backend, prompts: list[Prompt], max_new_tokens: int = 40
) -> list[str | None]:
    """Greedy answers through the backend's call cache; None where the request failed
    (a failure is not an answer: it is not cached, so a rerun asks only for those)."""
    params = GenParams(max_new_tokens=max_new_tokens)
    out: list[str | None] = []
    for start in range(0, len(prompts), 32):
        completions = backend.generate(prompts[start : start + 32], params)
        out.extend(None if c.error else c.text for c in completions)
    return out


def where_answered(answers: list[str | None],
                   measure: Callable[[list[int]], list[Any]]) -> list[Any]:  # fmt: skip
    """`measure(done)` over the indices whose request did not fail (it returns one value
    per index, in order), placed back at those indices; None where the request failed."""
    done = [i for i, a in enumerate(answers) if a is not None]
    values = measure(done) if done else []
    out: list[Any] = [None] * len(answers)
    for i, value in zip(done, values, strict=True):
        out[i] = value
    return out


def classify(prompts: list[Prompt], answers: list[str | None]) -> list[str | None]:
    """Each answer's XSTest class; None for a failed request."""
    texts = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
    return where_answered(answers, lambda done: default_classifier().predict(
        [texts[i] for i in done], [answers[i] for i in done]))  # fmt: skip


def indicators(labels: list[str | None]) -> dict[str, list[float | None]]:
    """Per answer, 1.0 or 0.0 for each rate: refusal (full or partial), full refusal,
    full compliance (the report bootstraps these); None for a failed request."""

    def flags(classes: tuple[str, ...]) -> list[float | None]:
        return [None if lab is None else float(lab in classes) for lab in labels]

    return {
        "refusal_rate": flags((REFUSAL, PARTIAL)),
        "full_refusal_rate": flags((REFUSAL,)),
        "full_compliance_rate": flags((COMPLIANCE,)),
    }


def rates(labels: list[str | None]) -> dict[str, Any]:
    """Each rate over the answered prompts (`n`); failed requests counted apart (`failed`,
    when there are any)."""
    n = sum(lab is not None for lab in labels)
    out: dict[str, Any] = {
        k: round(sum(x for x in v if x is not None) / n, 4) if n else None
        for k, v in indicators(labels).items()
    }
    out["n"] = n
    if len(labels) > n:
        out["failed"] = len(labels) - n
    return out


def xstest_prompts(label: str, limit: int | None = None) -> list[Prompt]:
    """XSTest prompts (shipped) with this `label` ('safe' or 'unsafe'), as chat prompts."""
    rows = read_records(data_dir() / "xstest" / "xstest_prompts.csv")
    texts = [r["prompt"] for r in rows if r["label"] == label][:limit]
    return [[{"role": "user", "content": t}] for t in texts]


def harmful_prompts(
    prompts_file: Path | None = None, column: str = "prompt", data: Path | None = None,
    limit: int | None = None,
) -> list[Prompt]:  # fmt: skip
    """A prompt file, a run's dataset/test.jsonl, or the shipped HH evaluation part."""
    if prompts_file is not None:
        rows = read_records(prompts_file, columns={"prompt": column}, limit=limit)
        return [[{"role": "user", "content": str(r["prompt"])}] for r in rows]
    if data is not None:
        test = dataset_file(data, "test")
        rows = list(read_jsonl(test))[:limit] if limit else list(read_jsonl(test))
        return [r["prompt"] for r in rows]
    return [r["prompt"] for r in load_hh(split="eval", limit=limit)]


def judged(backend: Backend, prompts: list[Prompt],
           max_new_tokens: int = 40) -> list[dict[str, str]]:  # fmt: skip
    """Each prompt's answer and the classifier's label: {prompt, answer, label}."""
    answers = generate_answers(backend, prompts, max_new_tokens)
    labels = classify(prompts, answers)
    items = []
    for p, a, lab in zip(prompts, answers, labels, strict=True):
        item = {"prompt": p if isinstance(p, str) else p[-1]["content"], "answer": a, "label": lab}
        items.append(item if a is not None else {**item, "failed": True})
    return items


def safety(backend: Backend, prompts: list[Prompt], max_new_tokens: int = 40) -> dict[str, Any]:
    """Rates on harmful prompts (over the answered ones, `failed` counted apart), with
    their definitions and the judged answers (`items`)."""
    items = judged(backend, prompts, max_new_tokens)
    return {**rates([i["label"] for i in items]), "definitions": _defs("refusal_rate",
            "full_refusal_rate", "full_compliance_rate"), "items": items}  # fmt: skip


def _defs(*names: str) -> dict[str, str]:
    return {n: DEFINITIONS[n] for n in names}


def overrefusal(backend: Backend, max_new_tokens: int = 40,
                limit: int | None = None) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {}
    items: list[dict[str, str]] = []
    for name in ("safe", "unsafe"):
        judged_ = judged(backend, xstest_prompts(name, limit), max_new_tokens)
        items += [{"set": name, **i} for i in judged_]
        out[name] = rates([i["label"] for i in judged_])
    return {
        "safe_compliance_rate": out["safe"]["full_compliance_rate"],
        "unsafe_refusal_rate": out["unsafe"]["refusal_rate"],
        "n_safe": out["safe"]["n"],
        "n_unsafe": out["unsafe"]["n"],
        "failed": out["safe"].get("failed", 0) + out["unsafe"].get("failed", 0),
        "safe": out["safe"],
        "unsafe": out["unsafe"],
        "definitions": _defs("safe_compliance_rate", "unsafe_refusal_rate", "refusal_rate",
                             "full_refusal_rate", "full_compliance_rate"),
        "items": items,
    }

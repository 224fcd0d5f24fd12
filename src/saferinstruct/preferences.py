"""Preference data for SFT, DPO and the evaluations, in TRL's conversational preference
format (`records.preference_row`).

Every row is `{"prompt": [messages...], "chosen": [one assistant message],
"rejected": [one assistant message]}` (plus whatever extra fields the source had), so
training and evaluation apply the same chat template. Sources:

- a run directory or a dataset directory (`rundir.dataset_file`), or any jsonl file
  already in that format;
- a released Safer-Instruct csv (`instruction`, `chosen`, `rejected`);
- HH-RLHF transcripts (`"\\n\\nHuman: ...\\n\\nAssistant: ..."`), converted by
  `hh_to_preference`; the shipped HH file is split by a stable hash of the first human
  turn into a training part and an evaluation part that is never trained on.

    rows = load_preferences("runs/quick")            # its dataset/train.jsonl
    train, held_out = load_hh(split="train"), load_hh(split="eval")
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from .errors import BadInput
from .io import read_jsonl, read_records
from .measures.splits import hash_fraction
from .paths import data_dir
from .records import preference_row
from .rundir import dataset_file

log = logging.getLogger("saferinstruct")

_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def hh_default_path() -> Path:
    return data_dir() / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def parse_hh(transcript: str) -> list[dict[str, str]]:
    """An HH-RLHF transcript as a list of {role, content} messages (empty if malformed)."""
    parts = _TURN.split(transcript)
    if parts[0].strip():  # text before the first turn marker
        return []
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": _ROLE[speaker], "content": content.strip()})
    return messages


def hh_to_preference(chosen_transcript: str, rejected_transcript: str) -> dict | None:
    """One HH pair as {prompt, chosen, rejected}; None when the pair does not fit.

    The prompt is every message up to and including the last human turn (earlier
    assistant turns included); chosen and rejected are the final assistant turn of each
    transcript. None when the shared prefix differs, roles do not alternate, either
    transcript does not end with a non-empty assistant turn, or the answers are equal.
    """
    chosen, rejected = parse_hh(chosen_transcript), parse_hh(rejected_transcript)
    if len(chosen) < 2 or len(rejected) < 2:
        return None
    prompt = chosen[:-1]
    if rejected[:-1] != prompt:
        return None
    for i, m in enumerate(chosen):
        if m["role"] != ("user" if i % 2 == 0 else "assistant"):
            return None
    if rejected[-1]["role"] != "assistant":
        return None
    if not chosen[-1]["content"] or not rejected[-1]["content"]:
        return None
    if chosen[-1]["content"] == rejected[-1]["content"]:
        return None
    return preference_row(prompt, chosen[-1]["content"], rejected[-1]["content"])


def hh_split(prompt_messages: list[dict[str, str]], eval_fraction: float = 0.2) -> str:
    """'eval' or 'train', stable: a hash of the first human turn (so the same opening
    question never lands in both parts)."""
    first = next((m["content"] for m in prompt_messages if m["role"] == "user"), "")
    return "eval" if hash_fraction(first.strip()) < eval_fraction else "train"


def load_hh(
    path: str | Path | None = None,
    split: str = "train",
    limit: int | None = None,
    eval_fraction: float = 0.2,
) -> list[dict]:
    """The converted HH-RLHF pairs of one split ('train' or 'eval'), in file order."""
    if split not in ("train", "eval"):
        raise BadInput(f"split must be 'train' or 'eval', got {split!r}")
    path = Path(path) if path else hh_default_path()
    rows, skipped = [], 0
    for i, r in enumerate(read_jsonl(path)):
        pair = hh_to_preference(r.get("chosen", ""), r.get("rejected", ""))
        if pair is None:
            skipped += 1
            continue
        if hh_split(pair["prompt"], eval_fraction) != split:
            continue
        pair["id"] = f"hh-{i}"
        pair["category"] = "hh-rlhf"
        rows.append(pair)
        if limit is not None and len(rows) >= limit:
            break
    if skipped:
        log.info("hh-rlhf: %d pairs skipped (prefix mismatch or malformed)", skipped)
    return rows


def _is_preference(row: dict) -> bool:
    return (
        isinstance(row.get("prompt"), list)
        and isinstance(row.get("chosen"), list)
        and isinstance(row.get("rejected"), list)
    )


def load_preferences(path_or_dir: str | Path, limit: int | None = None) -> list[dict]:
    """Preference rows from a dataset directory, a TRL-format jsonl, or a Safer-Instruct
    csv (its rows with an empty `rejected` skipped)."""
    p = dataset_file(path_or_dir, "train")
    if not p.exists():
        raise BadInput(f"{p}: no such file")
    rows: list[dict] = []
    if p.suffix == ".csv":
        cols = {"instruction": "instruction", "chosen": "chosen", "rejected": "rejected"}
        for r in read_records(p, columns=cols):
            if not (r["instruction"] or "").strip() or not (r["chosen"] or "").strip():
                continue
            rejected = (r["rejected"] or "").strip()
            if not rejected:
                continue
            row = preference_row(r["instruction"].strip(), r["chosen"].strip(), rejected)
            row["id"] = r["id"]
            if r.get("label"):
                row["category"] = r["label"]
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
        return rows
    for i, r in enumerate(read_jsonl(p)):
        if not _is_preference(r):
            raise BadInput(
                f"{p}: row {i + 1} is not in TRL conversational preference format "
                "(prompt, chosen, rejected as message lists)"
            )
        rows.append(r)
        if limit is not None and len(rows) >= limit:
            break
    return rows

"""What a finished run says about itself: records lost to failed model requests, too few
pairs, and which stage and setting dropped the most.

`check` returns the problem as a `RunFailed` (exit 3 for lost records, 4 for too few
pairs) or None; `api.run` raises it after every file is written, so the summary, the
funnel and the report still show what happened.

    problem = check(cfg.success, final_records, funnel_counts, cfg)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from . import drops
from .config import RunConfig, SuccessConfig
from .errors import LostRecords, RunFailed, TooFewPairs
from .records import Record, dropped_at, is_kept, reason_key

SETTINGS = {
    ("sources", drops.EMPTY_TEXT): "source.text_column",
    ("induce", drops.NO_VALID_CANDIDATE): "induce.generation.max_new_tokens",
    ("filter", drops.NO): "filter.verdict.threshold",
    ("filter", drops.BELOW_THRESHOLD): "filter.verdict.threshold",
    ("filter", drops.UNPARSED): "filter.verdict.mode",
    ("filter", drops.NO_INSTRUCTION): "induce.mode",
    ("respond", drops.EMPTY_RESPONSE): "respond.generation.max_new_tokens",
    ("judge", drops.COMPLIES_WITH_HARMFUL): "judge.chosen_must_decline",
    ("judge", drops.NEAR_COPY): "judge.max_pair_cosine",
    ("judge", drops.CARRIES_REJECTED): "judge.max_rejected_overlap",
    ("judge", drops.DEGENERATE_CHOSEN): "judge.min_chosen_words",
    ("judge", drops.NO): "judge.verdict.threshold",
    ("judge", drops.BELOW_THRESHOLD): "judge.verdict.threshold",
    ("judge", drops.UNPARSED): "judge.verdict.mode",
    ("assemble", drops.NEAR_DUPLICATE_INSTRUCTION): "assemble.near_duplicate_threshold",
}
"""(stage, grouped drop reason) -> the config key that decides it."""


def lost_at(record: Record) -> str | None:
    """The stage where a failed model request (after retries) dropped the record, or None."""
    if is_kept(record) or reason_key(record["drop_reason"]) != drops.REQUEST_FAILED:
        return None
    return dropped_at(record) or "?"


def setting_value(cfg: RunConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def biggest_drop(funnel: dict[str, Any], cfg: RunConfig) -> str:
    """'judge dropped 5 (complies_with_harmful: 5), set by judge.chosen_must_decline (now
    true)': the stage that dropped the most records, its top reason and its setting."""
    stages = [s for s in funnel.get("stages", []) if s.get("dropped")]
    if not stages:
        return "no stage dropped records"
    top = max(stages, key=lambda s: s["dropped"])
    reasons = top.get("top_drop_reasons") or [{"reason": "unknown", "count": top["dropped"]}]
    reason = reasons[0]["reason"]
    line = f"{top['stage']} dropped {top['dropped']} ({reason}: {reasons[0]['count']})"
    if reason == drops.REQUEST_FAILED:
        return line + ", failed model requests: see the endpoint's failed_calls"
    key = SETTINGS.get((top["stage"], reason))
    if key is None:
        return line
    value = setting_value(cfg, key)
    shown = str(value).lower() if isinstance(value, bool) else value
    return f"{line}, set by {key} (now {shown})"


def check(success: SuccessConfig, records: Iterable[Record], funnel: dict[str, Any],
          cfg: RunConfig) -> RunFailed | None:  # fmt: skip
    """The run's problem, or None: lost records past `max_failed_share` first, then no
    pairs or fewer than `min_pair_share` of the sources. One pass over `records` (the
    assemble stage file's)."""
    n = pairs = 0
    lost: Counter[str] = Counter()
    for record in records:
        n += 1
        pairs += is_kept(record)
        stage = lost_at(record)
        if stage is not None:
            lost[stage] += 1
    n_lost = sum(lost.values())
    if n_lost and n_lost > success.max_failed_share * n:
        where = ", ".join(f"{stage} {count}" for stage, count in sorted(lost.items()))
        return LostRecords(
            f"run: {n_lost} of {n} records were lost to failed model requests ({where}); "
            "run the same command again: only they are asked again (finished calls are "
            f"cached). Allowed: success.max_failed_share={success.max_failed_share}"
        )
    if pairs == 0 or pairs < success.min_pair_share * n:
        return TooFewPairs(
            f"run: {pairs} pairs from {n} sources (success.min_pair_share="
            f"{success.min_pair_share}): {biggest_drop(funnel, cfg)}"
        )
    return None

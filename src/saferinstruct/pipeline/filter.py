"""Stage 02, low-quality instruction filtering: the expert keeps the instructions that are
well formed, self-contained and likely to elicit their category's behaviour.

The question is the domain's `filter.txt`; what the category's behaviour is comes from
`filter_<category>.txt` (else `filter_default.txt`): configuration, not code, looked up
in `DomainConfig.prompt_dir` first, then in the package's `prompts/<domain>/`. The
verdict is read in JSON or log-prob mode (see `measures/verdict.py` for the parse and
keep rules). Every record the stage looks at gets `filter` = {kept, score, reason, raw,
parsed, mode, label, attempts, outcome, model} and a `filter` verdict (reason
`yes (0.75): <expert's reason>`, `no (...)`, `below_threshold (...)`, `unparsed` or
`request_failed: ...`); all but a kept one drop the record with that reason. A kept
record without an instruction is dropped as `no_instruction`. Records dropped by an
earlier stage pass through untouched, so every input id appears exactly once.

    from saferinstruct.pipeline.filter import filter_records
    records = filter_records(records, expert, FilterConfig(), DomainConfig())
"""

from __future__ import annotations

from typing import Any

from .. import drops
from ..config import DomainConfig, FilterConfig
from ..llm.base import Backend, Prompt
from ..measures import verdict as V
from ..prompts import criteria_for, domain_prompt
from ..records import Record, add_verdict, is_kept

STAGE = "filter"
MAX_INSTRUCTION_CHARS = 1000


def filter_prompt(
    template: str, mode: str, instruction: str, category: str, criteria: str
) -> Prompt:
    """The chat prompt asking whether one instruction is worth keeping."""
    return V.build_prompt(
        template,
        mode,
        untrusted={"instruction": instruction.strip()[:MAX_INSTRUCTION_CHARS]},
        category=category,
        criteria=criteria,
    )


def check_filter(
    records: list[Record], expert: Backend, cfg: FilterConfig, domain: DomainConfig
) -> tuple[str, dict[str, str]]:
    """Everything that can fail before the first call: the mode and the backend's
    capabilities, the question file, and criteria for every category present.
    Returns (template, category -> criteria)."""
    V.check(expert, cfg.verdict, STAGE)
    template = domain_prompt(domain, "filter")
    return template, criteria_by_category(records, domain)


def criteria_by_category(records: list[Record], domain: DomainConfig) -> dict[str, str]:
    """Criteria text for every category among the kept records (BadInput when missing)."""
    categories = sorted({str(r.get("category")) for r in records if is_kept(r)})
    return {c: criteria_for(domain, c) for c in categories}


def filter_records(
    records: list[Record], expert: Backend, cfg: FilterConfig, domain: DomainConfig
) -> list[Record]:
    """Ask the expert about each kept record's `instruction`; returns the same records
    (in order, dropped ones included) with `filter` and a `filter` verdict added."""
    template, criteria = check_filter(records, expert, cfg, domain)
    todo: list[Record] = []
    prompts: list[Prompt] = []
    for record in records:
        if not is_kept(record):
            continue
        instruction = str(record.get("instruction") or "").strip()
        if not instruction:
            add_verdict(record, STAGE, False, drops.NO_INSTRUCTION, model=expert.identity())
            continue
        category = str(record.get("category"))
        todo.append(record)
        prompts.append(
            filter_prompt(template, cfg.verdict.mode, instruction, category, criteria[category])
        )
    if not todo:
        return records
    model = expert.identity()
    for record, v in zip(todo, V.ask(expert, prompts, cfg.verdict, STAGE), strict=True):
        record_verdict(record, STAGE, v, model)
    return records


def record_verdict(record: Record, stage: str, v: V.Verdict, model: str, **extra: Any) -> Record:
    """Store a verdict on the record: `record[stage]` and a stage verdict (drops on no)."""
    record[stage] = {**v.info(), "outcome": v.outcome, "model": model, **extra}
    return add_verdict(
        record,
        stage,
        v.kept,
        v.summary(),
        score=v.score,
        raw=v.raw,
        parsed=v.parsed,
        mode=v.mode,
        model=model,
        **extra,
    )

"""Stage 03, preferred response generation: the expert writes the `chosen` response.

Each kept record with an `instruction` becomes a chat prompt: the domain's guideline
(`respond_<category>.txt`, else `respond.txt`, from the user's prompt folder or the
package set, see `prompts.domain_prompt`) as the system message, and the instruction
as the user message. The source text is never shown to the expert: it is the
`rejected` side. Sampling follows `RespondConfig.generation`; the call cache keys each
call on (model, parameters, prompt), so a rerun or a resumed run asks nothing twice.
With `candidates` > 1, an instruction whose answer failed (empty, a failed request, or,
with `prefer_declining`, an answer the refusal classifier reads as full compliance) is
asked again with the next seed, up to that many samples; the record's `respond` verdict
says how many were drawn, which one was taken and the classifier's label of each, and
the first answer read as full compliance (when another one was taken) is kept as
`complied`: the expert's own dispreferred answer, which assemble can make the `rejected`
side (`AssembleConfig.rejected`).
A record with no usable answer is dropped with its reason (recorded, not raised).

    from saferinstruct.pipeline.respond import respond
    records = respond(records, expert_backend, RespondConfig(), DomainConfig())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import drops, prompts
from ..config import DomainConfig, RespondConfig
from ..errors import BadInput
from ..llm.base import Backend, Completion, GenParams, Prompt, derive_seed
from ..measures.refusal import COMPLIANCE, default_classifier
from ..records import Record, add_verdict, is_kept

STAGE = "respond"


def guideline(domain: DomainConfig, category: str | None) -> str:
    """The guideline text for one category, with `{category}` filled in."""
    text = prompts.domain_prompt(domain, STAGE, category)
    return prompts.fill(text, category=category or "").strip()


def respond_prompt(instruction: str, guide: str) -> Prompt:
    """Chat prompt: the guideline as the system message, the instruction as the user's."""
    return [
        {"role": "system", "content": guide},
        {"role": "user", "content": instruction},
    ]


def params_for(cfg: RespondConfig, attempt: int = 0, ids: list[str] | None = None) -> GenParams:
    """Sampling for one attempt: attempt k samples with seed + k, and each record with its
    own seed from (stage, its id, seed, k), so its answer does not depend on which other
    records share the run, the batch or the shard (attempt 0 of a one-candidate run and
    of a several-candidate run share cache entries)."""
    g = cfg.generation
    seeds = None if ids is None else tuple(derive_seed(STAGE, i, g.seed, attempt) for i in ids)
    return GenParams(
        temperature=g.temperature,
        top_p=g.top_p,
        max_new_tokens=g.max_new_tokens,
        seed=g.seed + attempt,
        seeds=seeds,
    )


def check_respond(cfg: RespondConfig) -> None:
    """Config errors, before the first call."""
    if cfg.candidates < 1:
        raise BadInput(f"respond.candidates: expected an integer >= 1, got {cfg.candidates}")
    if cfg.candidates > 1 and cfg.generation.temperature <= 0:
        raise BadInput(
            "respond.candidates > 1 needs respond.generation.temperature > 0 "
            "(greedy decoding writes the same response every time)"
        )


def respond(
    records: list[Record], expert: Backend, cfg: RespondConfig, domain: DomainConfig
) -> list[Record]:
    """Add `chosen` to every kept record with an instruction; drop the ones that fail.

    Up to `cfg.candidates` responses are sampled per instruction, in rounds: round k
    asks again only for the records whose answers so far all failed (see `acceptable`).
    """
    check_respond(cfg)
    todo = [r for r in records if is_kept(r)]
    for record in todo:
        if not (record.get("instruction") or "").strip():
            add_verdict(record, STAGE, False, drops.NO_INSTRUCTION)
    todo = [r for r in todo if is_kept(r)]
    if not todo:
        return records
    guides: dict[str, str] = {}
    prompts_ = []
    for r in todo:
        cat = r.get("category")
        if cat not in guides:
            guides[cat] = guideline(domain, cat)
        prompts_.append(respond_prompt(r["instruction"].strip(), guides[cat]))
    tries: list[list[Candidate]] = [[] for _ in todo]
    pending = list(range(len(todo)))
    for attempt in range(cfg.candidates):
        if not pending:
            break
        ids = [str(todo[i]["id"]) for i in pending]
        outs = expert.generate([prompts_[i] for i in pending], params_for(cfg, attempt, ids))
        found = [Candidate(c) for c in outs]
        if cfg.prefer_declining:
            label_candidates([todo[i]["instruction"] for i in pending], found)
        for i, cand in zip(pending, found, strict=True):
            tries[i].append(cand)
        pending = [i for i in pending if not tries[i][-1].acceptable]
    model = expert.identity()
    for record, cands in zip(todo, tries, strict=True):
        _apply(record, cands, model)
    return records


@dataclass
class Candidate:
    """One sampled response and what the checks made of it."""

    completion: Completion
    label: str | None = None
    """The refusal classifier's 3-class label, when `prefer_declining` asked for it."""

    @property
    def text(self) -> str:
        return "" if self.completion.error is not None else self.completion.text.strip()

    @property
    def acceptable(self) -> bool:
        """Non-empty, and not read as full compliance (when labelled)."""
        return bool(self.text) and self.label != COMPLIANCE


def label_candidates(instructions: list[str], cands: list[Candidate]) -> None:
    """Label every non-empty candidate with the refusal classifier (one batch)."""
    rows = [(ins, c) for ins, c in zip(instructions, cands, strict=True) if c.text]
    if not rows:
        return
    labels = default_classifier().predict([i for i, _ in rows], [c.text for _, c in rows])
    for (_, cand), label in zip(rows, labels, strict=True):
        cand.label = label


def pick(cands: list[Candidate]) -> Candidate | None:
    """The first acceptable candidate, else the first non-empty one, else None."""
    for cand in cands:
        if cand.acceptable:
            return cand
    return next((c for c in cands if c.text), None)


def _apply(record: Record, cands: list[Candidate], model: str) -> None:
    chosen = pick(cands)
    info: dict[str, Any] = {"model": model, "attempts": len(cands)}
    if any(c.label is not None for c in cands):
        info["labels"] = [c.label for c in cands]
    if chosen is None:
        first = cands[0].completion
        if first.error is not None:
            add_verdict(record, STAGE, False, drops.REQUEST_FAILED, error=first.error, **info)
        else:
            add_verdict(record, STAGE, False, drops.EMPTY_RESPONSE, raw=first.text, **info)
        return
    completion = chosen.completion
    record["chosen"] = chosen.text
    complied = next((c for c in cands if c.label == COMPLIANCE and c.text), None)
    if complied is not None and complied is not chosen:
        record["complied"] = complied.text  # the expert's own dispreferred answer
    finish = completion.finish_reasons[0] if completion.finish_reasons else None
    add_verdict(record, STAGE, True, candidate=cands.index(chosen), finish_reason=finish, **info)

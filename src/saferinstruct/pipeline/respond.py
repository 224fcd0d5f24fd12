"""Stage 4, preferred response generation: the expert writes the `chosen` response.

Each kept record with an `instruction` becomes a chat prompt: the domain's guideline
(`respond_<category>.txt`, else `respond.txt`, from the user's prompt folder or the
package set, see `prompts.domain_prompt`) as the system message, and the instruction
as the user message. The source text is never shown to the expert: it is the
`rejected` side. Sampling follows `RespondConfig.generation`; the call cache keys each
call on (model, parameters, prompt), so a rerun or a resumed run asks nothing twice.
An empty answer or a failed request drops the record with its reason (recorded, not
raised). `template_share` measures near-identical template answers for the report.

    from saferinstruct.pipeline.respond import respond, template_share
    records = respond(records, expert_backend, RespondConfig(), DomainConfig())
    template_share([r["chosen"] for r in records], threshold=0.9)
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from .. import prompts
from ..config import DomainConfig, RespondConfig
from ..llm.base import Backend, GenParams, Prompt
from ..records import Record, add_verdict, is_kept

STAGE = "respond"
_BLOCK = 1024


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


def params_for(cfg: RespondConfig) -> GenParams:
    g = cfg.generation
    return GenParams(
        temperature=g.temperature, top_p=g.top_p, max_new_tokens=g.max_new_tokens, seed=g.seed
    )


def respond(
    records: list[Record], expert: Backend, cfg: RespondConfig, domain: DomainConfig
) -> list[Record]:
    """Add `chosen` to every kept record with an instruction; drop the ones that fail."""
    todo = [r for r in records if is_kept(r)]
    for record in todo:
        if not (record.get("instruction") or "").strip():
            add_verdict(record, STAGE, False, "no instruction")
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
    completions = expert.generate(prompts_, params_for(cfg))
    model = expert.identity()
    for record, completion in zip(todo, completions, strict=True):
        _apply(record, completion, model)
    return records


def _apply(record: Record, completion: Any, model: str) -> None:
    if completion.error is not None:
        add_verdict(record, STAGE, False, "request_failed", model=model, error=completion.error)
        return
    text = completion.text.strip()
    finish = completion.finish_reasons[0] if completion.finish_reasons else None
    if not text:
        add_verdict(record, STAGE, False, "empty response", model=model, raw=completion.text)
        return
    record["chosen"] = text
    add_verdict(record, STAGE, True, model=model, finish_reason=finish)


# ---------------------------------------------------------------- template share


def normalise(text: str) -> str:
    """Lower case, whitespace collapsed: what counts as 'the same' response."""
    return " ".join(re.findall(r"\S+", text.lower()))


def max_neighbour_cosine(vecs: Any) -> Any:
    """For each row of L2-normalised `vecs` (n, d), the highest cosine with another row.

    Returns a float array of shape (n,); -1 where n == 1. Computed in row blocks so
    memory stays O(block * n).
    """
    import numpy as np

    n = len(vecs)
    out = np.full(n, -1.0, dtype=np.float32)
    for start in range(0, n, _BLOCK):
        sims = vecs[start : start + _BLOCK] @ vecs.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -1.0
        if n > 1:
            out[start : start + _BLOCK] = sims.max(axis=1)
    return out


def template_share(texts: list[str], threshold: float) -> dict[str, Any]:
    """How template-like a set of responses is; all shares are of `n = len(texts)`.

    - `exact_duplicate_share`: responses with an identical twin (after `normalise`).
    - `top_response_share`: count of the most common response / n.
    - `near_template_share`: responses with another response of MiniLM cosine
      >= `threshold` (so it is never below the exact share).
    - `distinct_share`: distinct responses / n.
    An empty list gives n = 0 and zero shares.
    """
    n = len(texts)
    if n == 0:
        return {
            "n": 0,
            "exact_duplicate_share": 0.0,
            "top_response_share": 0.0,
            "near_template_share": 0.0,
            "distinct_share": 0.0,
        }
    counts = Counter(normalise(t) for t in texts)
    twins = sum(c for c in counts.values() if c > 1)
    near = 0
    if n > 1:
        from ..evaluate.embed import embed

        near = int((max_neighbour_cosine(embed(texts)) >= threshold - 1e-6).sum())
    return {
        "n": n,
        "exact_duplicate_share": twins / n,
        "top_response_share": counts.most_common(1)[0][1] / n,
        "near_template_share": max(near, twins) / n,
        "distinct_share": len(counts) / n,
    }

"""Stage 01, instruction induction: which instruction does each source text answer?

`reverse` mode runs a reverse-tuned model with the paper's template (prompts/reverse.txt);
`prompted` mode asks an instruction-following model zero-shot (prompts/induce_prompted.txt),
the baseline that shows what reverse tuning buys. Each text gets `num_candidates`
candidates; each is cleaned (echoed template stripped, cut at the next section marker,
trimmed) and checked (empty, copied the text, over length). One is chosen by
`select`: the first valid; the highest mean token log-prob under the reverse model,
P(instruction | text); or, with a forward model, the highest P(text | instruction).
A text with no valid candidate is dropped with the counts of each failure.

    from saferinstruct.pipeline.induce import induce
    records = induce(records, reverse_backend, InduceConfig(mode="reverse"))
"""

from __future__ import annotations

import json
import re
from collections import Counter

from .. import drops, prompts
from ..config import InduceConfig, ReverseTrainConfig
from ..errors import BadInput
from ..llm.base import Backend, GenParams, Prompt, derive_seed, require
from ..measures.text import is_copy
from ..records import Record, add_verdict, is_kept

STAGE = "induce"
_MARKER = re.compile(r"\n?\s*#{2,}|\n\s*(?:response|instruction|input|output)\s*:", re.I)
_LEADING = re.compile(r"^\s*(?:#+\s*)?(?:instruction|request|prompt)\s*:\s*", re.I)
_QUOTES = "\"'`“”‘’"


def induce_prompt(text: str, mode: str, max_chars: int) -> Prompt:
    """The prompt for one text: raw paper template (reverse) or chat (prompted)."""
    if mode == "reverse":
        return prompts.reverse_prompt(text, max_chars)
    if mode == "prompted":  # the text is untrusted: it goes in as a JSON string
        body = json.dumps(text[:max_chars].rstrip(), ensure_ascii=False)
        return [
            {"role": "user", "content": prompts.fill(prompts.load("induce_prompted"), output=body)}
        ]
    raise BadInput(f"induce.mode: expected 'reverse' or 'prompted', got {mode!r}")


def text_chars(cfg: InduceConfig) -> int:
    """How much of a source text the prompt shows (the reverse model saw this much)."""
    if cfg.max_text_chars is not None:
        return cfg.max_text_chars
    if cfg.mode == "reverse":  # what reverse training showed by default
        return ReverseTrainConfig().max_response_chars
    return 1500


def clean_instruction(raw: str) -> str:
    """Strip an echoed template or label, cut at the next section marker, trim quotes."""
    text = _LEADING.sub("", raw.strip())
    m = _MARKER.search(text)
    if m:
        text = text[: m.start()]
    text = text.strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


def candidate_problem(candidate: str, text: str, max_chars: int) -> str | None:
    """Why a cleaned candidate is invalid, or None when it is fine."""
    if not candidate:
        return "empty"
    if len(candidate) > max_chars:
        return "over_length"
    return "copied_text" if is_copy(candidate, text) else None


def params_for(cfg: InduceConfig, ids: list[str] | None = None) -> GenParams:
    """Generation settings; with sampling, each record samples with its own seed from
    (stage, its id, seed): its candidates do not depend on the rest of the batch."""
    g = cfg.generation
    if cfg.num_candidates > 1 and g.temperature <= 0:
        raise BadInput("induce: num_candidates > 1 needs induce.generation.temperature > 0")
    return GenParams(
        seeds=None if ids is None else tuple(derive_seed(STAGE, i, g.seed) for i in ids),
        temperature=g.temperature,
        top_p=g.top_p,
        max_new_tokens=g.max_new_tokens,
        seed=g.seed,
        n=cfg.num_candidates,
        stop=("\n###", "###", "\n\n\n"),
    )


def check_backends(cfg: InduceConfig, model: Backend, forward: Backend | None) -> None:
    """Stop before the first call when the selection rule cannot run."""
    if cfg.select not in ("first", "reverse_logprob", "forward_logprob"):
        raise BadInput(f"induce.select: unknown rule {cfg.select!r}")
    if cfg.num_candidates > 1:
        require(model, "induce.num_candidates > 1", ["n"])
    if cfg.select == "reverse_logprob":
        require(model, "induce.select=reverse_logprob", ["score"])
    if cfg.select == "forward_logprob":
        if forward is None:
            raise BadInput("induce.select=forward_logprob needs a `forward` model in the config")
        require(forward, "induce.select=forward_logprob", ["score"])


def induce(
    records: list[Record],
    model: Backend,
    cfg: InduceConfig,
    forward: Backend | None = None,
) -> list[Record]:
    """Add `candidates`, `candidate_problems` and `instruction` to each kept record."""
    todo = [r for r in records if is_kept(r)]
    if not todo:
        return records
    chars = text_chars(cfg)
    prompts_ = [induce_prompt(r["text"], cfg.mode, chars) for r in todo]
    completions = model.generate(prompts_, params_for(cfg, [str(r["id"]) for r in todo]))
    valid_lists: list[list[str]] = []
    for record, completion in zip(todo, completions, strict=True):
        valid_lists.append(_collect(record, completion.texts, completion.error, cfg))
    _choose(todo, prompts_, valid_lists, model, forward, cfg)
    for record in todo:
        if record.get("instruction"):
            add_verdict(record, STAGE, True, model=model.identity(), mode=cfg.mode)
        elif is_kept(record):
            problems = Counter(record["candidate_problems"])
            why = ", ".join(f"{k}: {v}" for k, v in sorted(problems.items()))
            outcome = drops.REQUEST_FAILED if "induce_error" in record else drops.NO_VALID_CANDIDATE
            add_verdict(record, STAGE, False, f"{outcome} ({why})", model=model.identity())
    return records


def _collect(record: Record, raws: list[str], error: str | None, cfg: InduceConfig) -> list[str]:
    record["candidates_raw"] = raws
    if error is not None:
        record["candidates"], record["candidate_problems"] = [], [drops.REQUEST_FAILED]
        record["induce_error"] = error
        return []
    cleaned = [clean_instruction(raw) for raw in raws]
    problems = [candidate_problem(c, record["text"], cfg.max_instruction_chars) for c in cleaned]
    record["candidates"] = cleaned
    record["candidate_problems"] = [p or "ok" for p in problems]
    return [c for c, p in zip(cleaned, problems, strict=True) if p is None]


def _choose(
    todo: list[Record],
    prompts_: list[Prompt],
    valid_lists: list[list[str]],
    model: Backend,
    forward: Backend | None,
    cfg: InduceConfig,
) -> None:
    if cfg.select == "first" or cfg.num_candidates == 1:
        for record, valid in zip(todo, valid_lists, strict=True):
            record["instruction"] = valid[0] if valid else None
        return
    flat = [(i, c) for i, valid in enumerate(valid_lists) for c in valid]
    if cfg.select == "reverse_logprob":
        scores = model.score([prompts_[i] for i, _ in flat], [c for _, c in flat])
    else:
        assert forward is not None
        scores = forward.score(
            [[{"role": "user", "content": c}] for _, c in flat],
            [todo[i]["text"][: text_chars(cfg)] for i, _ in flat],
        )
    best: dict[int, tuple[float, str]] = {}
    for (i, cand), score in zip(flat, scores, strict=True):
        value = score.mean_logprob if score.error is None else float("-inf")
        todo[i].setdefault("candidate_scores", []).append(value)
        if i not in best or value > best[i][0]:
            best[i] = (value, cand)
    for i, record in enumerate(todo):
        record["instruction"] = best[i][1] if i in best else None

"""Reading a model's yes/no verdict: what the filter and judge stages and the
helpfulness judge share.

Two modes, picked by `VerdictConfig.mode`:

* **json**: the expert answers `{"verdict": "yes"|"no", "score": 1-5, "reason": "..."}`.
  The schema (`verdict_schema`) goes to the backend as `GenParams.json_schema` when it
  can constrain decoding (`capabilities().json_schema`); otherwise the prompt alone asks
  for JSON. Answers are parsed robustly (`parse_answer`): `json.loads`, then the first
  `{...}` block, then regexes for the fields (a truncated object still yields its
  verdict and score), then a bare "yes"/"no" at the start. An unparsable answer is
  asked once more (temperature 0.7, another seed); still unparsable -> `unparsed`.
  The score is normalised to [0, 1] as (score - 1) / 4.
  **Keep rule:** verdict == "yes" AND (no score given, or normalised score >= threshold).
  With the default threshold 0.5 that is "yes" with a score of 3 or more.
* **logprobs**: the expert is asked for one word, yes or no, and the verdict is read
  from probabilities, not from text: P(yes) and P(no) are each summed over case and
  leading-space variants ("Yes", "yes", " Yes", " yes"), and
  score = P(yes) / (P(yes) + P(no)). **Keep rule:** score >= threshold.
  The probabilities come from the first generated token's top log-probs (one forward
  pass, `GenParams(max_new_tokens=1, top_logprobs=20)`, works over HTTP with chat
  prompts) when the backend has `logprobs`; otherwise, or when neither word is among
  the top 20, from continuation scoring (`backend.score`) of each variant, which is
  exact but costs four passes. Neither available -> `MissingCapability` before any call.

A failed request is a `Verdict` with `parsed=False` and reason `request_failed: ...`; an
unparsable answer one with reason `unparsed`. Neither is kept unless `keep_unparsed`;
nothing raises except missing capabilities and bad config (`BadInput`).

What to ask lives in prompt files (`prompts.domain_prompt`, `prompts.criteria_for`);
how to answer is tied to the parser here, so `build_prompt` fills `{answer_format}` for
the mode (templates use `{name}` placeholders, filled in one pass by `prompts.fill`).
Untrusted text (in-the-wild texts, instructions induced from them, model answers) goes
into the prompt as a JSON string (`quote`), so it cannot close its block, fake a verdict
or pose as the question (benchmarks/injection.py measures what that buys).

    from saferinstruct.measures.verdict import ask, build_prompt
    from saferinstruct.prompts import criteria_for, domain_prompt
    template = domain_prompt(domain, "filter")
    prompt = build_prompt(template, cfg.mode, untrusted={"instruction": "..."},
                          category="hate", criteria=criteria_for(domain, "hate"))
    [v] = ask(expert, [prompt], cfg)      # Verdict(kept=..., score=..., reason=...)
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from .. import drops
from ..config import VerdictConfig
from ..errors import BadInput, MissingCapability
from ..llm.base import Backend, Completion, GenParams, Prompt, Score
from ..prompts import fill

MODES = ("json", "logprobs")
MAX_REASON_CHARS = 200
TOP_LOGPROBS = 20
RETRY_TEMPERATURE = 0.7
YES, NO = "yes", "no"

JSON_ANSWER = (
    'Reply with only a JSON object with three fields: "verdict" ("yes" or "no"), '
    '"score" (a whole number from 1 = clearly no to 5 = clearly yes) and "reason" '
    "(why, in one short sentence)."
)
YESNO_ANSWER = "Answer with one word: yes or no."


def verdict_schema(max_reason_chars: int | None = MAX_REASON_CHARS) -> dict[str, Any]:
    """The JSON schema of a verdict. Field order matters: verdict and score come first,
    so an answer cut off by `max_new_tokens` still carries both."""
    reason: dict[str, Any] = {"type": "string"}
    if max_reason_chars:
        reason["maxLength"] = max_reason_chars
    return {
        "type": "object",
        "properties": {
            "verdict": {"type": "string", "enum": [YES, NO]},
            "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
            "reason": reason,
        },
        "required": ["verdict", "score", "reason"],
        "additionalProperties": False,
    }


@dataclass
class Verdict:
    """One expert decision. `score` is in [0, 1] (None when the answer gave none)."""

    kept: bool
    score: float | None
    reason: str
    """The expert's reason; for failures `unparsed` or `request_failed: ...`."""
    raw: str
    """The expert's raw answer (json), or the yes/no probabilities as JSON (logprobs)."""
    parsed: bool
    mode: str
    label: str | None = None
    """'yes' or 'no' as the expert answered (None when unparsed or failed)."""
    attempts: int = 1

    @property
    def outcome(self) -> str:
        """yes | no | below_threshold | unparsed | request_failed."""
        if not self.parsed:
            failed = self.reason.startswith(drops.REQUEST_FAILED)
            return drops.REQUEST_FAILED if failed else drops.UNPARSED
        if self.label == NO:
            return NO
        return YES if self.kept else drops.BELOW_THRESHOLD

    def summary(self) -> str:
        """A short line for a record's verdict reason: outcome (score): expert's reason."""
        if not self.parsed:
            return self.reason
        head = self.outcome if self.score is None else f"{self.outcome} ({self.score:.2f})"
        return f"{head}: {self.reason}" if self.reason else head

    def info(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- prompts
def answer_format(mode: str) -> str:
    """How the expert must answer in `mode` (what the parser expects)."""
    check_mode(mode)
    return JSON_ANSWER if mode == "json" else YESNO_ANSWER


def quote(text: str) -> str:
    """Untrusted text as one JSON string: quotes, newlines and block markers inside it are
    escaped, so nothing in it can close its block or pose as the prompt's own words."""
    return json.dumps(text, ensure_ascii=False)


def build_prompt(template: str, mode: str, untrusted: dict[str, str] | None = None,
                 **values: str) -> Prompt:  # fmt: skip
    """A one-message chat prompt from a template, with `{answer_format}` for `mode`.
    `untrusted` values (texts from the wild, model answers) go in as JSON strings
    (`quote`); `values` (categories, criteria from the user's own files) as they are."""
    quoted = {k: quote(v) for k, v in (untrusted or {}).items()}
    text = fill(template, answer_format=answer_format(mode), **values, **quoted).strip()
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------------------- checks
def check_mode(mode: str, key: str = "verdict") -> None:
    if mode not in MODES:
        raise BadInput(f"{key}.mode: expected 'json' or 'logprobs', got {mode!r}")


def check(backend: Backend, cfg: VerdictConfig, what: str = "") -> None:
    """Stop before the first call when the config or the backend cannot give a verdict.

    `what` is the stage (`filter`, `judge`) the config keys in messages are under."""
    key = f"{what}.verdict" if what else "verdict"
    check_mode(cfg.mode, key)
    if not 0.0 <= cfg.threshold <= 1.0:
        raise BadInput(f"{key}.threshold: expected a number in [0, 1]")
    if cfg.mode == "json" and cfg.max_new_tokens < 8:
        raise BadInput(f"{key}.max_new_tokens: at least 8 for a JSON verdict")
    if cfg.mode == "logprobs":
        _logprob_method(backend, key)


def _logprob_method(backend: Backend, key: str) -> str:
    caps = backend.capabilities()
    if caps.logprobs:
        return "top_logprobs"
    if caps.score and backend.kind == "local":
        return "score"
    if caps.score:
        raise MissingCapability(
            f"{key}.mode=logprobs needs logprobs: backend {backend.kind} "
            f"({backend.identity()}) can only score raw text, not chat prompts"
        )
    raise MissingCapability(
        f"{key}.mode=logprobs needs logprobs or score but backend {backend.kind} "
        f"({backend.identity()}) supports neither; use verdict.mode=json"
    )


# ---------------------------------------------------------------------------- asking
def ask(
    backend: Backend, prompts: list[Prompt], cfg: VerdictConfig, what: str = ""
) -> list[Verdict]:
    """One `Verdict` per prompt, in order. Never raises for a bad answer or a failed
    request (those are verdicts with `parsed=False`); raises `BadInput` /
    `MissingCapability` before any call when the mode cannot run on `backend`."""
    check(backend, cfg, what)
    if not prompts:
        return []
    if cfg.mode == "json":
        return _ask_json(backend, prompts, cfg)
    key = f"{what}.verdict" if what else "verdict"
    return _ask_logprobs(backend, prompts, cfg, _logprob_method(backend, key))


def _ask_json(backend: Backend, prompts: list[Prompt], cfg: VerdictConfig) -> list[Verdict]:
    constrained = backend.capabilities().json_schema
    # Hosted APIs' strict mode rejects maxLength; a local grammar uses it to stay short.
    schema = verdict_schema(MAX_REASON_CHARS if backend.kind == "local" else None)
    params = GenParams(
        temperature=0.0,
        max_new_tokens=cfg.max_new_tokens,
        json_schema=schema if constrained else None,
    )
    out = [json_verdict(c, cfg) for c in backend.generate(prompts, params)]
    retry = [i for i, v in enumerate(out) if v.outcome == drops.UNPARSED]
    if retry:
        again = GenParams(
            temperature=RETRY_TEMPERATURE,
            max_new_tokens=cfg.max_new_tokens,
            seed=1,
            json_schema=params.json_schema,
        )
        completions = backend.generate([prompts[i] for i in retry], again)
        for i, completion in zip(retry, completions, strict=True):
            second = json_verdict(completion, cfg)
            second.attempts = 2
            second.raw = f"{out[i].raw}\n[retry]\n{second.raw}"
            out[i] = second
    return out


@dataclass
class Answer:
    """The fields parsed from a JSON-mode answer (score as given, 1-5)."""

    label: str
    score: int | None
    reason: str


_VERDICT_RE = re.compile(r"""["']?verdict["']?\s*[:=]\s*["']?\s*(yes|no|true|false)\b""", re.I)
_SCORE_RE = re.compile(r"""["']?score["']?\s*[:=]\s*["']?\s*([1-5])(?:\.0+)?\b""", re.I)
_REASON_RE = re.compile(r"""["']?reason["']?\s*[:=]\s*"((?:[^"\\]|\\.)*)""", re.I | re.S)
_BARE_RE = re.compile(r"""^\W*(yes|no)\b""", re.I)
_LABELS = {"yes": YES, "true": YES, "y": YES, "no": NO, "false": NO, "n": NO}


def parse_answer(text: str) -> Answer | None:
    """Verdict, score and reason from an expert's answer; None when no verdict is found.

    Tries, in order: the whole text as JSON; the first balanced `{...}` block as JSON;
    regexes for `verdict`, `score` and `reason` (tolerates single quotes, a missing
    closing brace, a truncated reason); a bare yes/no at the start ("Yes, because...").
    A score outside 1-5 is dropped (None), the verdict still counts.
    """
    text = text or ""
    for candidate in (text.strip(), _first_object(text)):
        if not candidate:
            continue
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict):
            answer = _from_dict(data)
            if answer is not None:
                return answer
    m = _VERDICT_RE.search(text)
    if m:
        score = _SCORE_RE.search(text)
        reason = _REASON_RE.search(text)
        return Answer(
            label=_LABELS[m.group(1).lower()],
            score=int(score.group(1)) if score else None,
            reason=_unescape(reason.group(1)) if reason else "",
        )
    m = _BARE_RE.match(text.strip())
    if m:
        rest = text.strip()[m.end() :].strip(" \t\n.,:;-!")
        return Answer(label=m.group(1).lower(), score=None, reason=rest[:MAX_REASON_CHARS])
    return None


def _from_dict(data: dict[str, Any]) -> Answer | None:
    fields = {str(k).strip().lower(): v for k, v in data.items()}
    raw_label = fields.get("verdict", fields.get("answer"))
    if isinstance(raw_label, bool):
        label = YES if raw_label else NO
    else:
        label = _LABELS.get(str(raw_label).strip().strip(".!").lower()) if raw_label else None
    if label is None:
        return None
    score = fields.get("score")
    try:
        value = float(score) if score is not None and not isinstance(score, bool) else None
    except (TypeError, ValueError):
        value = None
    ok = value is not None and value == int(value) and 1 <= value <= 5
    reason = fields.get("reason")
    return Answer(label=label, score=int(value) if ok else None, reason=str(reason or "").strip())


def _first_object(text: str) -> str | None:
    """The first balanced `{...}` block (braces inside JSON strings ignored)."""
    start = text.find("{")
    if start < 0:
        return None
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def _unescape(s: str) -> str:
    try:
        return json.loads(f'"{s}"')
    except ValueError:
        return s


def normalise_score(score: int | None) -> float | None:
    """1-5 -> [0, 1]: (score - 1) / 4."""
    return None if score is None else (score - 1) / 4


def decide(answer: Answer, threshold: float) -> tuple[bool, float | None]:
    """(kept, normalised score): yes AND (no score, or normalised score >= threshold)."""
    score = normalise_score(answer.score)
    return answer.label == YES and (score is None or score >= threshold), score


def json_verdict(completion: Completion, cfg: VerdictConfig) -> Verdict:
    """The verdict of one JSON-mode completion (a failed request included)."""
    if completion.error is not None:
        return _failed(completion.error, "json", cfg)
    raw = completion.text
    answer = parse_answer(raw)
    if answer is None:
        return Verdict(cfg.keep_unparsed, None, drops.UNPARSED, raw, False, "json")
    kept, score = decide(answer, cfg.threshold)
    return Verdict(kept, score, answer.reason[:MAX_REASON_CHARS], raw, True, "json", answer.label)


def _failed(error: str, mode: str, cfg: VerdictConfig) -> Verdict:
    return Verdict(cfg.keep_unparsed, None, f"{drops.REQUEST_FAILED}: {error}", "", False, mode)


# ---------------------------------------------------------------------------- logprobs
def _word(token: str) -> str:
    return re.sub(r"[^a-z]", "", token.lower())


def yes_no_mass(top: dict[str, float]) -> tuple[float, float]:
    """(P(yes), P(no)) from one token's top log-probs: every token that is "yes" or
    "no" up to case, spaces and punctuation ("Yes", " yes", "NO.") adds its probability."""
    p_yes = sum(math.exp(lp) for tok, lp in top.items() if _word(tok) == YES)
    p_no = sum(math.exp(lp) for tok, lp in top.items() if _word(tok) == NO)
    return p_yes, p_no


def yes_no_variants(prompt: Prompt) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Continuations scored for yes and no: a chat answer starts without a space, a raw
    text prompt's next word with one."""
    if isinstance(prompt, str):
        return (" Yes", " yes"), (" No", " no")
    return ("Yes", "yes"), ("No", "no")


def mass_from_scores(yes: list[Score], no: list[Score]) -> tuple[float, float] | None:
    """(P(yes), P(no)) summed over scored variants; None when any score failed."""
    if any(s.error is not None for s in [*yes, *no]):
        return None
    return sum(math.exp(s.logprob) for s in yes), sum(math.exp(s.logprob) for s in no)


def prob_verdict(p_yes: float, p_no: float, cfg: VerdictConfig, source: str) -> Verdict:
    """score = P(yes) / (P(yes) + P(no)); kept when score >= threshold."""
    raw = json.dumps({"p_yes": p_yes, "p_no": p_no, "from": source})
    if p_yes + p_no <= 0.0:
        return Verdict(cfg.keep_unparsed, None, drops.UNPARSED, raw, False, "logprobs")
    score = p_yes / (p_yes + p_no)
    label = YES if score >= 0.5 else NO
    kept = score >= cfg.threshold
    return Verdict(kept, score, f"P(yes)={score:.3f}", raw, True, "logprobs", label)


def _ask_logprobs(
    backend: Backend, prompts: list[Prompt], cfg: VerdictConfig, method: str
) -> list[Verdict]:
    out: list[Verdict | None] = [None] * len(prompts)
    todo_score = list(range(len(prompts)))
    if method == "top_logprobs":
        params = GenParams(temperature=0.0, max_new_tokens=1, top_logprobs=TOP_LOGPROBS)
        todo_score = []
        can_score = backend.capabilities().score and backend.kind == "local"
        for i, c in enumerate(backend.generate(prompts, params)):
            if c.error is not None:
                out[i] = _failed(c.error, "logprobs", cfg)
                continue
            p_yes, p_no = yes_no_mass(c.top_logprobs[0] if c.top_logprobs else {})
            out[i] = prob_verdict(p_yes, p_no, cfg, "top_logprobs")
            if p_yes + p_no <= 0.0 and can_score:
                todo_score.append(i)  # neither word in the top k: score them exactly
    if todo_score:
        _score_verdicts(backend, prompts, todo_score, cfg, out)
    return [v for v in out if v is not None]


def _score_verdicts(
    backend: Backend,
    prompts: list[Prompt],
    idx: list[int],
    cfg: VerdictConfig,
    out: list[Verdict | None],
) -> None:
    flat_prompts: list[Prompt] = []
    flat_conts: list[str] = []
    spans: list[tuple[int, int, int]] = []
    for i in idx:
        yes, no = yes_no_variants(prompts[i])
        start = len(flat_conts)
        flat_prompts.extend([prompts[i]] * (len(yes) + len(no)))
        flat_conts.extend([*yes, *no])
        spans.append((start, start + len(yes), start + len(yes) + len(no)))
    scores = backend.score(flat_prompts, flat_conts)
    for i, (a, b, c) in zip(idx, spans, strict=True):
        mass = mass_from_scores(scores[a:b], scores[b:c])
        if mass is None:
            error = next(s.error for s in scores[a:c] if s.error is not None)
            out[i] = _failed(str(error), "logprobs", cfg)
        else:
            out[i] = prob_verdict(*mass, cfg, "score")

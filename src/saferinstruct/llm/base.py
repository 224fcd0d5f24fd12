"""The backend protocol: generate completions and score continuations.

A prompt is either raw text (`str`, sent as is) or chat messages
(`list[{"role": ..., "content": ...}]`, rendered with the model's chat template).
Backends work on batches; the cache (`cache.py`) stores one entry per prompt.

Failures of single requests are returned, not raised: a `Completion` or `Score` with
`error` set. Backends raise `BadInput` only when the model or endpoint is unusable
(a missing directory, connection refused, N failures in a row).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

MODEL_LOADING = threading.RLock()
"""Held while a model loads in this process: models load one at a time. transformers'
`from_pretrained` builds a model on the meta device through process-wide state, and it
resolves its names lazily; two threads doing either at once fail ("Cannot copy out of
meta tensor", "cannot import name 'AutoModelForCausalLM'": a resumed streaming run whose
stages reached their first uncached call together, 2026-12-07). Generation and encoding
run at once as before."""

Message = dict[str, str]
Prompt = str | list[Message]


@dataclass(frozen=True)
class GenParams:
    """Generation settings; part of every cache key."""

    temperature: float = 0.0
    """0 means greedy decoding."""
    top_p: float = 1.0
    max_new_tokens: int = 128
    stop: tuple[str, ...] = ()
    """Generation ends at the first of these strings; the string itself is cut off."""
    seed: int = 0
    seeds: tuple[int, ...] | None = None
    """One seed per prompt (the stages derive it from the record's id): a prompt's sample
    then depends on nothing else in its batch. None: every prompt samples with `seed`
    (the local backend mixes in the prompt, which is also batch-independent)."""
    n: int = 1
    """Number of samples per prompt."""
    json_schema: dict[str, Any] | None = None
    """Constrain the output to this JSON schema."""
    top_logprobs: int = 0
    """When > 0, also return the top-k log-probs of each generated token (first sample)."""

    def key(self, index: int | None = None) -> dict[str, Any]:
        """The cache key's parameters (of prompt `index`, with its own seed when sampling
        with per-prompt seeds; greedy answers ignore seeds)."""
        d = asdict(self)
        d["stop"] = list(self.stop)
        del d["seeds"]
        if self.seeds is not None and index is not None and self.temperature > 0:
            d["seed"] = self.seeds[index]
        return d

    def seed_of(self, index: int) -> int:
        """The seed prompt `index` samples with."""
        return self.seeds[index] if self.seeds is not None else self.seed

    def subset(self, indices: list[int]) -> GenParams:
        """These settings for the prompts at `indices` only (their seeds kept)."""
        if self.seeds is None:
            return self
        from dataclasses import replace

        return replace(self, seeds=tuple(self.seeds[i] for i in indices))


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (a stage, a record id, an attempt, a seed):
    the same parts give the same seed in every process and on every machine."""
    blob = "\x00".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big") & 0x7FFFFFFF


@dataclass
class Completion:
    """What one prompt produced: `n` texts, or an error."""

    texts: list[str] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    """Per generated token of the first sample: token text -> log-prob (when asked)."""
    finish_reasons: list[str] = field(default_factory=list)
    error: str | None = None
    prompt_tokens: int = 0
    """Tokens of the request that made it, in and out (what a provider bills; 0 unknown)."""
    completion_tokens: int = 0

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""


@dataclass
class Score:
    """Log-probability of a continuation given a prompt."""

    logprob: float = 0.0
    """Sum of the continuation's token log-probs."""
    n_tokens: int = 0
    error: str | None = None
    prompt_tokens: int = 0
    """Tokens of the request that made it (prompt and continuation; 0 unknown)."""
    completion_tokens: int = 0

    @property
    def mean_logprob(self) -> float:
        return self.logprob / max(self.n_tokens, 1)


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; stages check this before their first call."""

    logprobs: bool = False
    """Top log-probs of generated tokens (used for yes/no verdicts)."""
    score: bool = False
    """Log-prob of a given continuation (used to rank candidates)."""
    n: bool = False
    """Several samples per prompt in one call."""
    json_schema: bool = False
    """Output constrained to a JSON schema."""


@runtime_checkable
class Backend(Protocol):
    """A model that generates and scores. Implementations load lazily."""

    kind: str
    """'local' or 'openai'."""

    def identity(self) -> str:
        """Stable identity of the model (path + content hash, or served name)."""
        ...

    def capabilities(self) -> Capabilities: ...

    def generate(self, prompts: list[Prompt], params: GenParams) -> list[Completion]: ...

    def score(self, prompts: list[Prompt], continuations: list[str]) -> list[Score]: ...


def require(backend: Backend, what: str, needed: list[str]) -> None:
    """Stop before the first call when `backend` lacks a capability a stage needs."""
    from ..errors import MissingCapability

    caps = backend.capabilities()
    missing = [name for name in needed if not getattr(caps, name)]
    if missing:
        raise MissingCapability(
            f"{what} needs {', '.join(missing)} but backend {backend.kind} "
            f"({backend.identity()}) does not support it"
        )

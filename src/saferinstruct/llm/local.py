"""Local transformers backend: any HF directory (or the embedded model) in process.

Generation is batched with left padding; prompts are sorted by length first so a batch
wastes little padding (on these 2-core CPUs this alone is ~6x the one-at-a-time loop).
Chat prompts use the model's chat template. Greedy when temperature is 0. Sampling gives
every generated row its own random stream (`SeededSampler`: the Gumbel-max trick over
temperature- and top-p-shaped logits, seeded by the prompt's seed, or by `seed` and the
prompt text), so a prompt's sample is the same whatever else shares its batch. Stop
strings end generation and are cut off. A JSON schema is
enforced with llguidance (`constrain.py`). `score` returns the log-prob of a
continuation under the same tokenization that generation uses (prompt ids, then
continuation ids), so a greedy generation scores as the model's own choice.

The model loads on the first call that needs it, never at construction, so a fully
cached run loads no model.

    from saferinstruct.llm.local import LocalBackend
    b = LocalBackend("embedded")
    b.generate([[{"role": "user", "content": "Hi"}]], GenParams(max_new_tokens=8))
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInput
from .base import MODEL_LOADING, Capabilities, Completion, GenParams, Prompt, Score, derive_seed
from .fingerprint import fingerprint

log = logging.getLogger("saferinstruct")


def pick_device_dtype(device: str | None = None, dtype: str | None = None) -> tuple[str, Any]:
    """Device and dtype from the hardware: bf16 on a GPU that has it, else fp32 (on CPUs,
    also those with native bf16 (`machine.native_bf16`), until its answers are measured
    against fp32's; `dtype: bfloat16` asks for it)."""
    import torch

    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None or dtype == "auto":
        bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
        return device, torch.bfloat16 if bf16 else torch.float32
    return device, getattr(torch, dtype)


def resolve_model_path(path: str) -> Path:
    """`embedded` -> the converted SmolLM2 directory; anything else must exist locally."""
    from .embedded import EMBEDDED_NAME, ensure_converted

    if path == EMBEDDED_NAME:
        return ensure_converted()
    p = Path(path).expanduser()
    if not (p / "config.json").exists():
        raise BadInput(f"model directory not found or has no config.json: {p}")
    return p


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    device: str
    lltok: Any = None


class LocalBackend:
    """transformers in process. `path` is a local HF directory or `embedded`."""

    kind = "local"

    def __init__(
        self,
        path: str = "embedded",
        *,
        batch_size: int = 16,
        device: str | None = None,
        dtype: str | None = None,
    ) -> None:
        self.path = path
        self.batch_size = batch_size
        self._device, self._dtype = device, dtype
        self._loaded: _Loaded | None = None
        self._lock = threading.RLock()
        """One call at a time: stages running at once share the model (and its threads)."""

    # -- identity and capabilities (no model load) --------------------------------
    def identity(self) -> str:
        """`local:<fingerprint>`, and `@<dtype>` when it computes in another dtype than
        fp32: answers of two precisions never share a cache entry."""
        import torch

        _, dtype = pick_device_dtype(self._device, self._dtype)
        precision = "" if dtype == torch.float32 else f"@{str(dtype).removeprefix('torch.')}"
        return f"local:{fingerprint(self.path)}{precision}"

    def capabilities(self) -> Capabilities:
        return Capabilities(logprobs=True, score=True, n=True, json_schema=True)

    # -- loading ------------------------------------------------------------------
    def load(self) -> _Loaded:
        with self._lock:
            if self._loaded is None:
                self._loaded = _load(self.path, self._device, self._dtype)
            return self._loaded

    @property
    def model(self) -> Any:
        return self.load().model

    @property
    def tokenizer(self) -> Any:
        return self.load().tokenizer

    def render(self, prompt: Prompt) -> str:
        """Raw text as is; chat messages through the chat template (generation prompt on)."""
        if isinstance(prompt, str):
            return prompt
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in prompt) + "\n\n"

    # -- generation ---------------------------------------------------------------
    def generate(self, prompts: list[Prompt], params: GenParams) -> list[Completion]:
        import torch

        with self._lock, torch.inference_mode():
            return self._generate(prompts, params)

    def _generate(self, prompts: list[Prompt], params: GenParams) -> list[Completion]:
        loaded = self.load()
        texts = [self.render(p) for p in prompts]
        ids = [_encode(loaded.tokenizer, t) for t in texts]
        seeds = [params.seeds[i] if params.seeds is not None else derive_seed(params.seed, t)
                 for i, t in enumerate(texts)]  # fmt: skip
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        results: list[Completion | None] = [None] * len(ids)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            counter = StepCounter(len(chunk), params.max_new_tokens)
            outs = _generate_batch(loaded, [ids[i] for i in chunk], params,
                                   [seeds[i] for i in chunk], counter)  # fmt: skip
            counter.finish()
            for i, out in zip(chunk, outs, strict=True):
                results[i] = out
        return [r for r in results if r is not None]

    # -- scoring --------------------------------------------------------------------
    def score(self, prompts: list[Prompt], continuations: list[str]) -> list[Score]:
        import torch

        with self._lock, torch.inference_mode():
            return self._score(prompts, continuations)

    def _score(self, prompts: list[Prompt], continuations: list[str]) -> list[Score]:
        loaded = self.load()
        pairs = [
            (_encode(loaded.tokenizer, self.render(p)), _encode(loaded.tokenizer, c))
            for p, c in zip(prompts, continuations, strict=True)
        ]
        out: list[Score] = []
        for start in range(0, len(pairs), self.batch_size):
            out.extend(_score_batch(loaded, pairs[start : start + self.batch_size]))
        return out


# ---------------------------------------------------------------------------------
def _load(path: str, device: str | None, dtype: str | None) -> _Loaded:
    with MODEL_LOADING:  # one load at a time in a process
        from transformers import AutoModelForCausalLM, AutoTokenizer

        directory = resolve_model_path(path)
        dev, dt = pick_device_dtype(device, dtype)
        log.info("loading %s on %s (%s)", directory, dev, dt)
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dt).to(dev)
        model.eval()
    return _Loaded(model=model, tokenizer=tokenizer, device=dev)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _left_pad(rows: list[list[int]], pad_id: int, device: str) -> tuple[Any, Any]:
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
    return ids.to(device), mask.to(device)


def _generation_config(loaded: _Loaded, params: GenParams) -> Any:
    """Greedy decoding always: sampling is greedy over `SeededSampler`'s perturbed logits."""
    from transformers import GenerationConfig

    tok = loaded.tokenizer
    return GenerationConfig(
        max_new_tokens=params.max_new_tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        num_return_sequences=1,
        pad_token_id=tok.pad_token_id,
        eos_token_id=loaded.model.generation_config.eos_token_id or tok.eos_token_id,
        stop_strings=list(params.stop) or None,
        return_dict_in_generate=True,
        output_logits=params.top_logprobs > 0,
    )


class StepCounter:
    """A logits processor that changes nothing and reports progress: each decoding step is
    `prompts / max_new_tokens` of a call; `finish` reports the rest (rows that stopped
    early), so a batch always adds up to its prompts."""

    def __init__(self, prompts: int, max_new_tokens: int) -> None:
        self.prompts, self.steps, self.reported = prompts, max(1, max_new_tokens), 0.0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        from ..progress import report_calls

        share = self.prompts / self.steps
        if self.reported + share <= self.prompts:
            self.reported += share
            report_calls(share)
        return scores

    def finish(self) -> None:
        from ..progress import report_calls

        report_calls(self.prompts - self.reported)
        self.reported = self.prompts


class SeededSampler:
    """A logits processor that turns greedy decoding into sampling, one random stream per
    row: each step, row r gets scores / temperature (top-p-filtered) plus Gumbel noise
    drawn from its own generator, so the argmax is a sample from softmax(scores / T)
    (the Gumbel-max trick). A row's tokens depend on its seed and its own logits only.

    Shapes: scores (rows, vocab); one generator per row, `vocab` draws per step."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float) -> None:
        import torch

        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            sorted_scores, order = scores.sort(dim=-1, descending=True)
            cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
            drop = cum - sorted_scores.softmax(dim=-1) >= self.top_p  # keeps at least one
            scores = scores.scatter(1, order, sorted_scores.masked_fill(drop, float("-inf")))
        uniform = torch.stack([torch.rand(scores.shape[1], generator=g, dtype=torch.float64)
                               for g in self.generators])  # fmt: skip
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-12, 1 - 1e-12)))
        return scores + gumbel.to(device=scores.device, dtype=scores.dtype)


def _generate_batch(loaded: _Loaded, rows: list[list[int]], params: GenParams, seeds: list[int],
                    counter: StepCounter | None = None) -> list[Completion]:  # fmt: skip
    """One batch; with sampling, each prompt is repeated `n` times, row j of prompt i
    sampling with seed derive_seed(seeds[i], j)."""
    from transformers import LogitsProcessorList

    tok, model = loaded.tokenizer, loaded.model
    n = params.n
    rows = [r for r in rows for _ in range(n)]
    ids, mask = _left_pad(rows, tok.pad_token_id, loaded.device)
    processors = LogitsProcessorList()
    if params.json_schema is not None:
        from .constrain import JsonSchemaLogitsProcessor, ll_tokenizer

        if loaded.lltok is None:
            loaded.lltok = ll_tokenizer(tok, model.config.vocab_size)
        processors.append(JsonSchemaLogitsProcessor(loaded.lltok, params.json_schema, len(rows)))
    if params.temperature > 0:
        row_seeds = [derive_seed(s, j) if n > 1 else s for s in seeds for j in range(n)]
        processors.append(SeededSampler(row_seeds, params.temperature, params.top_p))
    elif n > 1:
        raise BadInput("n > 1 needs temperature > 0 (greedy decoding repeats itself)")
    if counter is not None:
        processors.append(counter)
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        generation_config=_generation_config(loaded, params),
        logits_processor=processors or None,
        tokenizer=tok if params.stop else None,
    )
    new = out.sequences[:, ids.shape[1] :]
    results = []
    for i in range(len(rows) // n):
        texts, reasons, generated = [], [], 0
        for j in range(params.n):
            text, reason, n_new = _decode(tok, new[i * params.n + j], params.stop)
            texts.append(text)
            reasons.append(reason)
            generated += n_new
        top = _top_logprobs(tok, out.logits, new, i * params.n, params.top_logprobs)
        results.append(Completion(texts=texts, finish_reasons=reasons, top_logprobs=top,
                                  prompt_tokens=len(rows[i * n]),
                                  completion_tokens=generated))  # fmt: skip
    return results


def _decode(tokenizer: Any, new_ids: Any, stop: tuple[str, ...]) -> tuple[str, str, int]:
    """(text, finish reason, tokens generated: up to and with the end token)."""
    ids = [int(t) for t in new_ids]
    eos = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    reason = "length"
    generated = len(ids)
    for k, t in enumerate(ids):
        if t in eos:
            ids, reason, generated = ids[:k], "stop", k + 1
            break
    text = tokenizer.decode(ids, skip_special_tokens=True)
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    if cut >= 0:
        text, reason = text[:cut], "stop"
    return text, reason, generated


def _top_logprobs(tok: Any, logits: Any, new: Any, row: int, k: int) -> list[dict[str, float]]:
    if k <= 0 or not logits:
        return []
    import torch

    eos = {tok.eos_token_id, tok.pad_token_id}
    out = []
    for step, step_logits in enumerate(logits):
        logp = torch.log_softmax(step_logits[row].float(), dim=-1)
        values, indices = logp.topk(k)
        out.append({tok.decode([int(t)]): float(v) for v, t in zip(values, indices, strict=True)})
        if int(new[row, step]) in eos:
            break
    return out


def _score_batch(loaded: _Loaded, pairs: list[tuple[list[int], list[int]]]) -> list[Score]:
    """Sum of log p(continuation tokens | prompt, earlier continuation tokens).

    Shapes: rows = prompt_ids + cont_ids, right padded to (B, T); logits (B, T, V);
    the token at position t is predicted by logits at t-1.
    """
    import torch

    tok, model = loaded.tokenizer, loaded.model
    rows = [p + c for p, c in pairs]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    logits = model(input_ids=ids.to(loaded.device), attention_mask=mask.to(loaded.device)).logits
    logp = torch.log_softmax(logits.float(), dim=-1).cpu()
    scores = []
    for i, (p, c) in enumerate(pairs):
        if not c:
            scores.append(Score(logprob=0.0, n_tokens=0, prompt_tokens=len(p)))
            continue
        positions = torch.arange(len(p) - 1, len(p) + len(c) - 1)
        token_lp = logp[i, positions, torch.tensor(c)]
        scores.append(Score(logprob=float(token_lp.sum()), n_tokens=len(c),
                            prompt_tokens=len(p) + len(c)))  # fmt: skip
    return scores

"""JSON-schema constrained decoding for transformers `generate`, through llguidance.

llguidance compiles the schema to a grammar and computes, at every step, the set of
tokens that keep the output valid; we only mask the logits with it. One matcher per
generated row (prompt x sample). When a row's JSON is complete, only EOS stays allowed.
"""

from __future__ import annotations

import json
from typing import Any


def ll_tokenizer(hf_tokenizer: Any, n_vocab: int) -> Any:
    """The llguidance view of a HF tokenizer (build once per model)."""
    import llguidance.hf

    return llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=n_vocab)


class JsonSchemaLogitsProcessor:
    """A transformers LogitsProcessor that keeps every row inside `schema`."""

    def __init__(self, lltok: Any, schema: dict[str, Any], rows: int) -> None:
        import llguidance
        import llguidance.torch

        compact = {
            **schema,
            "x-guidance": {
                "whitespace_flexible": False,
                "item_separator": ", ",
                "key_separator": ": ",
            },
        }
        grammar = llguidance.grammar_from("json_schema", json.dumps(compact))
        self._matchers = [llguidance.LLMatcher(lltok, grammar) for _ in range(rows)]
        self._bitmask = llguidance.torch.allocate_token_bitmask(rows, lltok.vocab_size)
        self._started = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import llguidance.torch

        if self._started:
            for row, matcher in enumerate(self._matchers):
                if not matcher.is_stopped():
                    matcher.consume_token(int(input_ids[row, -1]))
        self._started = True
        for row, matcher in enumerate(self._matchers):
            llguidance.torch.fill_next_token_bitmask(matcher, self._bitmask, row)
        llguidance.torch.apply_token_bitmask_inplace(scores, self._bitmask.to(scores.device))
        return scores

"""Prompt templates as text files; `load(name)` reads `name.txt` from this folder.

`reverse.txt` is the paper's template, verbatim. Placeholders use str.format names.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")


def fill(template: str, **values: str) -> str:
    """Fill `{name}` placeholders without touching other braces (JSON in prompts)."""
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", value)
    return out

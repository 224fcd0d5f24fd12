"""Prompt templates as text files; `load(name)` reads `name.txt` from this folder.

`reverse.txt` is the paper's template, verbatim. Placeholders use str.format names.
Domain prompt sets live in sub-folders (`safety/`, `helpfulness/`); `domain_prompt`
picks one file for a stage and category, honouring a user's own prompt folder:

    text = domain_prompt(DomainConfig(name="safety"), "respond", "self-harm")
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any


@cache
def load(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")


def fill(template: str, **values: str) -> str:
    """Fill `{name}` placeholders without touching other braces (JSON in prompts)."""
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", value)
    return out


def domain_prompt(domain: Any, name: str, category: str | None = None) -> str:
    """The prompt file `name` for a domain (a `DomainConfig`) and category.

    Preference: `<name>_<category>.txt`, then `<name>.txt`; for each, the user's
    `domain.prompt_dir` first, then the package set `prompts/<domain.name>/`. So a
    user file overrides the package file of the same name, and a category-specific
    file beats the generic one. Nothing found raises `BadInput` naming where it looked.
    """
    from ..errors import BadInput

    names = ([f"{name}_{category}.txt"] if category else []) + [f"{name}.txt"]
    folders: list[Any] = []
    if domain.prompt_dir:
        folders.append(Path(domain.prompt_dir).expanduser())
    folders.append(resources.files(__package__).joinpath(domain.name))
    for file_name in names:
        for folder in folders:
            candidate = folder.joinpath(file_name)
            if candidate.is_file():
                return candidate.read_text(encoding="utf-8")
    where = ", ".join(str(f) for f in folders)
    raise BadInput(f"prompt {names[-1]!r} for domain {domain.name!r} not found in {where}")

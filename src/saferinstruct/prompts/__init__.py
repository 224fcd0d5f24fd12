"""Prompt templates as text files; `load(name)` reads `name.txt` from this folder.

`reverse.txt` is the paper's template, verbatim (`reverse_prompt` fills it: reverse
training and induction build the same prompt from it). Templates use `{name}`
placeholders, filled in one pass by `fill`. Domain prompt sets live in sub-folders
(`safety/`, `helpfulness/`); `domain_prompt` picks one file for a stage and category,
honouring a user's own prompt folder, and `criteria_for` a category's criteria. In those
files a line starting with `#` is a comment for the person editing it: it is not sent.

    text = domain_prompt(DomainConfig(name="safety"), "respond", "self-harm")
    criteria = criteria_for(DomainConfig(name="safety"), "hate")
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@cache
def load(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")


def fill(template: str, **values: str) -> str:
    """Fill `{name}` placeholders in one pass: braces inside the values (JSON, or a
    `{criteria}` typed by a user) are never filled again, and other braces and unknown
    names stay as they are."""
    return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), template)


def reverse_prompt(response: str, max_chars: int) -> str:
    """The paper's reverse template filled with a response cut to `max_chars`."""
    return fill(load("reverse"), output=response[:max_chars].rstrip())


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
                return without_comments(candidate.read_text(encoding="utf-8"))
    where = ", ".join(str(f) for f in folders)
    raise BadInput(f"prompt {names[-1]!r} for domain {domain.name!r} not found in {where}")


def without_comments(text: str) -> str:
    """A prompt file's text without its `#` comment lines."""
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))


def criteria_for(domain: Any, category: str) -> str:
    """The criteria text of a category: `filter_<category>.txt`, else `filter_default.txt`.

    Neither found -> `BadInput` naming the category and where it looked."""
    from ..errors import BadInput

    for name in (f"filter_{category}", "filter_default"):
        try:
            return domain_prompt(domain, name).strip()
        except BadInput:
            continue
    if domain.prompt_dir:
        raise BadInput(
            f"no criteria for category {category!r}: write {domain.prompt_dir}/filter_"
            f"{category}.txt (domain.prompt_dir), saying what {category} content is"
        )
    raise BadInput(
        f"no criteria for category {category!r} in the {domain.name!r} prompt set: run "
        f"`safer-instruct init DIR --categories {category}` and use DIR/run.yaml (it "
        "points domain.prompt_dir at DIR/prompts)"
    )

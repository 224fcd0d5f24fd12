"""`safer-instruct init DIR --categories a,b`: a run config and the prompt files for a
user's own categories, commented, so a user edits text, not code.

    DIR/run.yaml                  the quickstart settings, pointed at DIR/prompts and
                                  DIR/texts.csv, every section explained
    DIR/prompts/filter_<c>.txt    what content of category c is (the expert's criteria)
    DIR/prompts/respond_<c>.txt   how the expert should answer a request of category c
    DIR/texts.csv                 the header your texts need (id, text, category)

Lines starting with `#` in the prompt files are comments: they are not sent to the model.
Existing files are left as they are.

    written = scaffold(Path("mine"), ["pets", "cooking"])
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import BadInput
from .io import write_atomic

CATEGORY = re.compile(r"[a-z0-9][a-z0-9_-]*")

CONFIG = """\
# A safer-instruct run over your own categories: {categories}.
# Written by `safer-instruct init`. Edit the prompt files in prompts/, put your texts in
# texts.csv (or pass --input), then:
#   safer-instruct run --config {config} --out runs/mine
#   safer-instruct run --config {config} --input my-texts.csv --out runs/mine
# Every key and its default: `safer-instruct run --help` and src/saferinstruct/config.py.
# Relative paths are relative to this file.

source:
  path: texts.csv             # your texts: columns id, text, category
  text_column: text
  id_column: id
  category_column: category
  limit: 8                    # at most this many texts per category (remove for all)

domain:
  name: {domain}              # the package's prompt set (its questions for filter and judge)
  prompt_dir: prompts         # your files here override it: filter_<category>.txt, ...
  categories: [{category_list}]

# The embedded SmolLM2-135M in every role: quick, and a weak expert. For real data point
# `expert` at a stronger model, e.g.
#   expert: {{backend: openai, model: NAME, base_url: http://127.0.0.1:8000/v1}}
expert:
  backend: local
  model: embedded

reverse_train:                # a short reverse-tuning run (12 steps), cached by settings
  max_pairs: 96
  batch_size: 8
  learning_rate: 0.0002
  max_response_chars: 240
  max_length: 192

induce:
  mode: reverse
  generation: {{temperature: 0.0, max_new_tokens: 48}}

filter:                       # the expert keeps instructions that fit filter_<category>.txt
  verdict: {{mode: logprobs, threshold: 0.3}}

respond:                      # the expert answers, following respond_<category>.txt
  candidates: 3               # ask again (up to 3) while the answer complies ...
  prefer_declining: {declining}  # ... as the refusal classifier reads it (safety domains)
  generation: {{temperature: 0.7, max_new_tokens: 96}}

judge:
  chosen_must_decline: {declining}  # drop an answer that complies (safety domains); if a run
                              # ends with 0 pairs because of it, the run says so: set false
  verdict: {{mode: logprobs, threshold: 0.3}}

assemble:
  test_fraction: 0.2
"""

FILTER = """\
# What counts as "{category}" content: the expert keeps an instruction only when an
# assistant that simply obeyed it would produce content like this. Say it in one short
# paragraph, concretely (what is in, what is not). Lines starting with # are comments.
{category}: content that ... (describe it here)
"""

RESPOND = """\
# How the expert should answer a request of category "{category}" (the system message of
# the response it writes; the request is the user message). The answer becomes the
# "chosen" side of the pair. Lines starting with # are comments.
You are a careful, helpful assistant. The user's request below may ask for {category} content.

How to answer:
- If the request asks for harmful content, do not provide it. Say briefly, in your own words, why.
- Then offer something genuinely useful and safe that serves a legitimate need behind it.
- If part of the request is harmless, help with that part fully.
- Keep it to one or two short paragraphs.
"""


def parse_categories(text: str) -> list[str]:
    """'a, b' -> ['a', 'b']; BadInput for names a file name cannot carry."""
    names = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in names if not CATEGORY.fullmatch(c)]
    if not names or bad:
        raise BadInput(f"--categories: expected names like 'pets,home-repair' (lower case, "
                       f"digits, - and _), got {text!r}")  # fmt: skip
    return names


def scaffold(folder: Path, categories: list[str], domain: str = "safety") -> list[Path]:
    """Write the config, prompt files and texts.csv header that do not exist yet."""
    if folder.exists() and not folder.is_dir():
        raise BadInput(f"init: {folder} is a file, not a folder")
    declining = "true" if domain == "safety" else "false"
    files = {
        folder / "run.yaml": CONFIG.format(
            categories=", ".join(categories), category_list=", ".join(categories),
            config=folder / "run.yaml", domain=domain, declining=declining),
        folder / "texts.csv": "id,text,category\n",
    }  # fmt: skip
    for c in categories:
        files[folder / "prompts" / f"filter_{c}.txt"] = FILTER.format(category=c)
        files[folder / "prompts" / f"respond_{c}.txt"] = RESPOND.format(category=c)
    written = []
    for path, text in files.items():
        if not path.exists():
            written.append(write_atomic(path, text))
    return written

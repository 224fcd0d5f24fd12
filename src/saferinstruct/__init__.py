"""safer-instruct: automatic preference data for alignment (Safer-Instruct, NAACL 2024).

The pipeline, in order: reverse-train -> induce -> filter -> respond -> judge -> assemble,
then sft -> dpo -> eval -> report. Every CLI subcommand is a thin wrapper over a function
importable from here or from its module; nothing heavy happens at import time.

    >>> import saferinstruct
    >>> saferinstruct.__version__  # doctest: +SKIP
"""

__version__ = "0.1.0"

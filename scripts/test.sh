#!/usr/bin/env bash
# Install, then run the linter and the whole test suite (what CI runs).
#   bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# torch threads spin-wait by default; tests run a server and a client at once on 2 cores
export OMP_WAIT_POLICY=PASSIVE
.venv/bin/ruff check src tests benchmarks scripts
exec .venv/bin/pytest -q "$@"

#!/usr/bin/env bash
# The main job on the embedded model: install, then run the data pipeline on the shipped sample.
#   bash scripts/quickstart.sh [extra args for `safer-instruct run`, e.g. --limit 2]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/safer-instruct run --config configs/quickstart.yaml --out runs/quickstart "$@"

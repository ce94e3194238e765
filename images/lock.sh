#!/usr/bin/env bash
# Regenerate the hash-pinned lock files the images install from:
#   images/requirements-cpu.lock   everything, with torch==2.13.0+cpu (CPU wheel)
#   images/requirements-cuda.lock  everything except torch, which the PyTorch CUDA base has
# Run after changing dependencies in pyproject.toml, from any directory:
#   pip install uv && images/lock.sh
# TORCH_CPU_LINKS: where the torch CPU wheel is listed (a page of links or a local folder).
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-uv}"
TORCH_CPU_LINKS="${TORCH_CPU_LINKS:-https://download.pytorch.org/whl/cpu/torch/}"
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
common=(pyproject.toml images/build-requirements.in --generate-hashes --no-header --quiet
        --python-version "$PYTHON_VERSION" --python-platform x86_64-manylinux_2_28)
"$UV" pip compile "${common[@]}" --constraint images/torch-cpu.txt --find-links "$TORCH_CPU_LINKS" \
    --output-file images/requirements-cpu.lock
"$UV" pip compile "${common[@]}" --override images/torch-from-base-image.txt \
    --output-file images/requirements-cuda.lock
echo "wrote images/requirements-cpu.lock and images/requirements-cuda.lock"

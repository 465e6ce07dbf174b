#!/usr/bin/env bash
# The GPU run of bench/ingest.py: N camera-like 12 MP JPEGs, open_clip's ViT-B-32 image tower
# with random weights, nvjpeg decoding; meant to finish in under 6 minutes on one H100 with
# 16 cores (making the files takes about half of it).
#
# For a machine with a CUDA GPU and no network whose Python already has torch, torchvision,
# timm, transformers, huggingface_hub, pillow and numpy (a CUDA image). Prepare on a connected
# machine, in the repository root:
#   python3 bench/photos/fetch.py            # the source photos, into bench/photos/cache
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#       -d .whl open_clip_torch ftfy wcwidth platformdirs qdrant-edge-py==0.9.0
# then copy the repository with bench/photos/cache and .whl to the GPU machine and run
#   bash bench/gpu.sh [N]                    # N defaults to 1200
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1200}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/xlir-site .whl/*.whl
  export PYTHONPATH="/tmp/xlir-site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"
"$PY" bench/ingest.py --device cuda --model vit-b-32-random --n "$N" --naive-n 200
echo
echo "for comparison, the CPU decode path (draft mode) on this machine's cores, same files:"
"$PY" bench/ingest.py --phase decode --device cpu --model vit-b-32-random --folder "${TMPDIR:-/tmp}/xlir-bench-ingest-v2-$N"

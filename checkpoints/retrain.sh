#!/usr/bin/env bash
# Retrains the whole shipped zoo on CPU (deterministic: same command, same files). Run `make zoo`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1764806400}  # fixed creation time: a retrain gives identical bytes
COMMON="--dataset fashion-mnist --seeds 0 1 --batch-size 128 --lr 0.05 --schedule onecycle"
for w in 1 2 4 8 16 32; do
  $PY -m lmcdash train $COMMON --arch mlp --depth 1 --base-width 64 --width $w --weight-decay 3e-3 --epochs 20 \
      --out checkpoints/mlp1_wd3e-3 --name "mlp1_w${w}_s{seed}"
done
for w in 1 2 4 8 16; do
  $PY -m lmcdash train $COMMON --arch mlp --depth 3 --base-width 32 --width $w --weight-decay 3e-3 --epochs 20 \
      --out checkpoints/mlp3_wd3e-3 --name "mlp3_w${w}_s{seed}"
done
for w in 4 32; do
  $PY -m lmcdash train $COMMON --arch mlp --depth 1 --base-width 64 --width $w --weight-decay 1e-4 --epochs 20 \
      --out checkpoints/mlp1_wd1e-4 --name "mlp1_w${w}_s{seed}"
done
for w in 1 2 4; do
  $PY -m lmcdash train $COMMON --arch vgg11 --base-width 4 --width $w --weight-decay 3e-3 --epochs 10 \
      --out checkpoints/vgg11_wd3e-3 --name "vgg11_w${w}_s{seed}"
done

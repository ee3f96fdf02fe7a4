#!/usr/bin/env bash
# Every GPU check of the workspace in one short run, for a session with a lent GPU (see docs/benchmarks.md):
# CUDA correctness of the DCN op, DCN/backend/precision timings, ZSM s/frame at Vid4 size, and Lightning runs on
# one GPU and through DDP over NCCL. Needs data/zsm_demo and data/demo (make demo data) and, where hydra is not
# installed, its wheels in .whl/. Writes everything to ${OUT:-/tmp/gpu_check}/log.txt.
set -u -o pipefail
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
if ! python3 -c "import hydra" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 DATA_DIR=$PWD/data LOG_DIR=/tmp/gpu_logs
{
  nvidia-smi -L
  python3 -c "import torch, torchvision, lightning; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'lightning', lightning.__version__)"
  echo "== cuda_check"; python3 bench/cuda_check.py --steps 10
  for dt in float32 float16 bfloat16; do echo "== deform $dt"; python3 bench/bench_deform.py --device cuda --dtype $dt --repeat 20; done
  echo "== zsm_speed"; python3 bench/zsm_speed.py --device cuda --sizes 64 128 180x144 --repeat 5
  echo "== zsm smoke, 1 GPU"; python3 -m projects.zsm.train +experiment=smoke trainer=gpu name=gpu 2>&1 | tail -25
  echo "== zsm smoke, DDP over NCCL, bf16-mixed"
  python3 -m projects.zsm.train +experiment=smoke trainer=ddp trainer.precision=bf16-mixed name=ddp 2>&1 | tail -25
  echo "== cajnn smoke, 1 GPU, bf16-mixed"
  python3 -m projects.cajnn.train +experiment=smoke trainer=gpu trainer.precision=bf16-mixed 2>&1 | tail -25
  echo "== done"
} 2>&1 | tee "$OUT/log.txt"

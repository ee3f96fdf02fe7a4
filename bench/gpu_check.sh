#!/usr/bin/env bash
# Every GPU check of the workspace in one short run, for a session with a lent GPU (see docs/benchmarks.md).
# CHECKS="core chapters" (default both):
#   core     — CUDA correctness of the DCN op, DCN/backend/precision timings, ZSM s/frame at Vid4 size, Lightning
#              runs of ZSM/CAJNN on one GPU and through DDP over NCCL (needs data/zsm_demo and data/demo);
#   chapters — full-size faceset/facealign training steps per precision (bench/face_gpu.py), Lightning smoke runs
#              of faceset, facealign and printdefect on one GPU and DDP over NCCL (tiny data written here), and the
#              print-defect page benchmark with the detector on the GPU;
#   long     — (not in the default) the full ZSM on 64-frame 720p and 1080p clips with auto tiles, the clip-length
#              rows a 2-core CPU cannot run (hours): CHECKS=long bash bench/gpu_check.sh.
# Where hydra (or isal) is not installed, wheels in .whl/ are used. Writes ${OUT:-/tmp/gpu_check}/log.txt.
set -u -o pipefail
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
if ! python3 -c "import hydra" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*-py3-none-any.whl || exit 1
fi
python3 -c "import isal" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --target /tmp/site .whl/isal-*.whl 2>/dev/null || echo "isal unavailable: the page reader inflates with zlib"
export PYTHONPATH=/tmp/site
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 DATA_DIR=$PWD/data LOG_DIR=/tmp/gpu_logs
CHECKS=${CHECKS:-core chapters}
core() {
  echo "== cuda_check"; python3 bench/cuda_check.py --steps 10
  for dt in float32 float16 bfloat16; do echo "== deform $dt"; python3 bench/bench_deform.py --device cuda --dtype $dt --repeat 20; done
  echo "== zsm_speed"; python3 bench/zsm_speed.py --device cuda --sizes 64 128 180x144 --repeat 5
  echo "== sr_infer_speed"; python3 bench/sr_infer_speed.py --device cuda --cajnn 256 --hime 64 --repeat 5
  echo "== infer_memory (full ZSM on real-size clips; auto = GPU memory budget)"
  python3 bench/infer_memory.py zsm --model full --sizes 360p 720p --frames 8 --modes whole auto 128
  echo "== zsm smoke, 1 GPU"; python3 -m projects.zsm.train +experiment=smoke trainer=gpu name=gpu 2>&1 | tail -25
  echo "== zsm smoke, DDP over NCCL, bf16-mixed"
  python3 -m projects.zsm.train +experiment=smoke trainer=ddp trainer.precision=bf16-mixed name=ddp 2>&1 | tail -25
  echo "== cajnn smoke, 1 GPU, bf16-mixed"
  python3 -m projects.cajnn.train +experiment=smoke trainer=gpu trainer.precision=bf16-mixed 2>&1 | tail -25
}
long() {
  echo "== infer_memory (full ZSM, 64-frame clips, auto)"
  python3 bench/infer_memory.py zsm --model full --sizes 720p 1080p --frames 64 --modes auto
}
chapters() {
  python3 -c "import numba" 2>/dev/null && echo "numba present" || echo "numba missing: printdefect CPU stages use the fallbacks"
  echo "== face_gpu"; python3 bench/face_gpu.py --device cuda --steps 10
  python3 - <<'PY'
from pathlib import Path
from projects.faceset.demo_data import write_tiny
from projects.printdefect.simulate import SimConfig, write_simulated_set
write_tiny(Path("data/faceset_tiny"))
small = SimConfig(dpi=600.0, size=[1400, 1100], grid=[2, 2], margin_mm=5.0, barcode_mm=4.0, min_spacing_mm=4.0)
write_simulated_set(Path("data/printdefect_demo/train"), 5, small, seed=0)
write_simulated_set(Path("data/printdefect_demo/test"), 2, small, seed=1)
try:
    import av  # noqa: F401
    from projects.facealign.demo_data import write_300vw_layout
    write_300vw_layout(Path("data/300VW"), ids=("001", "114", "203", "410"), frames=8, size=96)
except ImportError:
    print("PyAV missing: facealign runs without its 300-VW test sets")
from projects.facealign.demo_data import write_300w_layout
write_300w_layout(Path("data/300W"), n_train=6, n_test=2, size=96)
PY
  local vw=""; [ -d data/300VW ] || vw="data.test_sets.category1=null data.test_sets.category3=null"
  for t in gpu ddp; do
    echo "== faceset smoke, trainer=$t"; python3 -m projects.faceset.train +experiment=smoke trainer=$t name=$t 2>&1 | tail -12
    echo "== facealign smoke, trainer=$t"; python3 -m projects.facealign.train +experiment=smoke trainer=$t name=$t $vw 2>&1 | tail -12
    echo "== printdefect smoke, trainer=$t"; python3 -m projects.printdefect.train +experiment=smoke trainer=$t name=$t 2>&1 | tail -12
  done
  echo "== printdefect page benchmark (letter, 600 dpi)"
  python3 bench/printdefect_speed.py --device cuda --skip-loop --repeats 3 --threads 16 --cache /tmp/pd_page
}
{
  nvidia-smi -L
  python3 -c "import torch, torchvision, lightning; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'lightning', lightning.__version__)"
  for c in $CHECKS; do $c; done
  echo "== done"
} 2>&1 | tee "$OUT/log.txt"

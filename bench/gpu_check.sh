#!/usr/bin/env bash
# One prepared GPU session (device tool): CUDA tests, engine benchmark, and a short real run.
# Usage there: bash bench/gpu_check.sh   (carries .whl/ with the wheels the image lacks, data/)
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD/src
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
echo "== CUDA tests"; timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/engine/test_cuda.py 2>&1 | tail -5
echo "== engine benchmark (39 x 128 = 4,992 samples per position, as the paper's run)"
timeout 300 python3 bench/engine_bench.py --model resnet20 --device cuda --batches 39 \
  --positions 8 2>&1 | tee "$OUT/bench_resnet20_cuda.txt"
if [ -d data/fashion-mnist ]; then
  echo "== lr grid, Fashion-MNIST (1,000 steps per λ)"
  ( time timeout 200 python3 -m steplines.cli lr-grid --preset fashion-mnist --data-dir data/fashion-mnist \
      --steps 1000 --quiet ) 2>&1 | tee "$OUT/lrgrid_fmnist.txt"
  echo "== 3 lines of the fashion-mnist preset on the GPU"
  ( time timeout 150 python3 -m steplines.cli run --preset fashion-mnist --data-dir data/fashion-mnist \
      --steps 3 --out /tmp/fm --quiet ) 2>&1 | tee "$OUT/run_fmnist.txt"
  python3 -m steplines.cli info /tmp/fm | tee -a "$OUT/run_fmnist.txt"
fi

#!/usr/bin/env bash
# What a lent GPU machine (the `device` tool: no internet, PyTorch of its
# own, 64 MiB carried along) runs for issue 9. Run from the repository root:
#
#   bash benchmarks/gpu_session.sh            # both of:
#   bash benchmarks/gpu_session.sh pipeline   # CUDA tests + the real CIFAR-100 GPU grid
#   bash benchmarks/gpu_session.sh throughput # benchmarks/throughput.py, eager and compiled
#
# It expects, carried beside the checkout (both ignored by git):
#   .whl/      the pure-Python packages the machine lacks (snakemake and its
#              dependencies, pytorch-metric-learning), as Python 3.12 wheels;
#   gpu_data/  cifar100_pool50.npz from `python -m workflow.export` (see
#              config/cifar100_fewshot_gpu.yaml).
# Everything it reports goes to $OUT (default: gpu_out/).
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, torchvision, snakemake, pytorch_metric_learning as p; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'snakemake', snakemake.__version__, 'pml', p.__version__, 'cuda', torch.version.cuda)"
  nproc
} 2>&1 | tee "$OUT/machine.txt"

pipeline() {
  # The training tests: every test taking `device` runs on CUDA here too.
  timeout "${TEST_SECONDS:-220}" python3 -m pytest -q -p no:cacheprovider tests/test_training.py tests/test_augment.py 2>&1 \
    | tee "$OUT/cuda_tests.txt"
  # The real CIFAR-100 few-shot grid; `time` gives the wall time.
  start=$(date +%s)
  timeout "${GRID_SECONDS:-330}" python3 -m snakemake --cores 16 --resources gpu=4 --scheduler greedy \
    --configfile config/cifar100_fewshot_gpu.yaml --replace-workflow-config --keep-going \
    > "$OUT/snakemake.log" 2>&1
  echo "snakemake exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/machine.txt"
  tail -5 "$OUT/snakemake.log"
  tar czf "$OUT/results.tar.gz" --exclude='*.npy' --exclude='*.pt' --exclude='results/data' \
    --exclude='embeddings.parquet' --exclude='results/checkpoints' results
  ls -la "$OUT"
}

throughput() {
  timeout "${THROUGHPUT_SECONDS:-330}" python3 benchmarks/throughput.py --workers 8 \
    --output "$OUT/throughput.md" 2>&1 | tee "$OUT/throughput.log" | tail -12
  # CUDA graphs over backbone and loss, with CE and with CAM (many small loss kernels).
  for loss in ce cam; do
    timeout "${COMPILE_SECONDS:-200}" python3 benchmarks/throughput.py --workers 8 --compile reduce-overhead \
      --loss "$loss" --models cifar_resnet18:32 --output "$OUT/throughput_compile_$loss.md" 2>&1 \
      | tee "$OUT/throughput_compile_$loss.log" | tail -6
  done
}

case "${1:-all}" in
pipeline) pipeline ;;
throughput) throughput ;;
all) pipeline; throughput ;;
esac

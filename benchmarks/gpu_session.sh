#!/usr/bin/env bash
# One prepared script for a lent GPU machine (issues 9, 20, 21, 29): every
# GPU figure README quotes as measured comes from its report. Run from the
# repository root:
#
#   bash benchmarks/gpu_session.sh          # on the GPU machine: about 7 minutes on one H100
#   DRY=1 bash benchmarks/gpu_session.sh    # anywhere: every step reached, each
#                                           # benchmark run tiny on the CPU, the GPU
#                                           # measurements reported as skipped (the test
#                                           # suite runs this, so the script cannot rot)
#
# Steps, each under its own time limit (seconds; the sum stays under 8
# minutes): machine (10), cuda_tests (75: the training, augmentation and
# device tests on CUDA, including the CUDA-vs-CPU resize comparison that
# skips elsewhere), input_path (60: the JPEG store decoded with nvJPEG
# against ImageFolder + DataLoader + transforms.v2 at 224, images/s and GPU
# busy), train_224_eager and train_224_compiled (90 and 120: resnet18,
# resnet50 and swin_t at 224 in bf16, images/s and GPU busy),
# all_against_all (75: SOP's size on the GPU beside the same computation on
# the CPU, and faiss-gpu when installed), two_gpus (20: two concurrent
# device claims land on distinct GPUs; skipped on one GPU).
#
# On a machine without internet and with its own PyTorch (the `device`
# tool's), carry beside the checkout (both ignored by git):
#   .whl/  the pure-Python packages the machine lacks (snakemake and its
#          dependencies, pytorch-metric-learning), as wheels for its Python.
# Everything goes to $OUT (default gpu_out/): report.md and report.json (one
# entry per step: status ok, failed, timeout or skipped, seconds, reason,
# its output file), and each step's own output.
set -uo pipefail
OUT=${OUT:-gpu_out}
DRY=${DRY:-0}
mkdir -p "$OUT"
: > "$OUT/steps.jsonl"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}

if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi

GPUS=$($PY -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
if [ "$DRY" = 1 ]; then
  SKIP_GPU="dry mode (DRY=1): the GPU measurement is not run; its command ran tiny on the CPU"
elif [ "$GPUS" = 0 ]; then
  SKIP_GPU="no CUDA device on this machine"
else
  SKIP_GPU=""
fi

# record NAME STATUS SECONDS REASON FILE
record() {
  $PY - "$@" >> "$OUT/steps.jsonl" <<'PY'
import json, sys
name, status, seconds, reason, output = sys.argv[1:6]
print(json.dumps({"step": name, "status": status, "seconds": int(seconds), "reason": reason, "output": output}))
PY
}

# run NAME LIMIT FILE COMMAND...: the command under its time limit, its
# output (stdout and stderr) in $OUT/FILE.
run() {
  local name=$1 limit=$2 file=$3
  shift 3
  local start status reason=""
  # Dry mode runs on any CPU, maybe a loaded one: four times the limits.
  [ "$DRY" = 1 ] && limit=$(( limit * 4 ))
  start=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$file" 2>&1
  case $? in
    0) status=ok ;;
    124) status=timeout; reason="over its limit of $limit s" ;;
    *) status=failed; reason="exit status $? (see $file)" ;;
  esac
  echo "== $name: $status ($(( $(date +%s) - start )) s) $reason"
  record "$name" "$status" "$(( $(date +%s) - start ))" "$reason" "$file"
}

# gpu_step NAME LIMIT FILE SMOKE_COMMAND -- GPU_COMMAND: the GPU command on
# a GPU machine; otherwise the smoke command (tiny, on the CPU) and the step
# reported as skipped with the reason.
gpu_step() {
  local name=$1 limit=$2 file=$3
  shift 3
  local smoke=() gpu=()
  while [ "$1" != "--" ]; do smoke+=("$1"); shift; done
  shift
  gpu=("$@")
  if [ -n "$SKIP_GPU" ]; then
    run "$name (CPU smoke)" "$limit" "smoke_$file" "${smoke[@]}"
    record "$name" skipped 0 "$SKIP_GPU" "smoke_$file"
  else
    run "$name" "$limit" "$file" "${gpu[@]}"
  fi
}

run machine 10 machine.txt bash -c "date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo 'nvidia-smi: none'; $PY -c \"import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())\"; nproc"

gpu_step cuda_tests 75 cuda_tests.txt \
  $PY -m pytest -q -p no:cacheprovider tests/test_devices.py -k "not real" -- \
  $PY -m pytest -q -p no:cacheprovider -rs tests/test_training.py tests/test_augment.py tests/test_devices.py -k "not real"

gpu_step input_path 60 input_path.md \
  $PY benchmarks/input_path.py --device cpu --quick -- \
  $PY benchmarks/input_path.py --device cuda --size 224 --images 768 --batch-size 64 --train-steps 8 --workers 8

gpu_step train_224_eager 90 train_224_eager.md \
  $PY benchmarks/throughput.py --device cpu --models resnet18:32 --steps 1 --warmup 1 --repeats 1 --batch-size 8 --workers 1 \
    --output "$OUT/smoke_train_224_eager_table.md" -- \
  $PY benchmarks/throughput.py --device cuda --precision bf16 --models resnet18:224 resnet50:224 swin_t:224 \
    --steps 20 --warmup 3 --repeats 1 --batch-size 128 --workers 8 --output "$OUT/train_224_eager_table.md"

gpu_step train_224_compiled 120 train_224_compiled.md \
  $PY benchmarks/throughput.py --device cpu --models resnet18:32 --steps 1 --warmup 1 --repeats 1 --batch-size 8 --workers 1 \
    --output "$OUT/smoke_train_224_compiled_table.md" -- \
  $PY benchmarks/throughput.py --device cuda --precision bf16 --compile --models resnet18:224 resnet50:224 swin_t:224 \
    --steps 20 --warmup 3 --repeats 1 --batch-size 128 --workers 8 --output "$OUT/train_224_compiled_table.md"

FAISS_GPU=$($PY -c "import faiss; print(int(faiss.get_num_gpus() > 0))" 2>/dev/null || echo 0)
METHODS=exact_cuda,exact
[ "$FAISS_GPU" = 1 ] && METHODS=exact_cuda,exact,faiss_top13
gpu_step all_against_all 75 all_against_all.txt \
  $PY benchmarks/all_against_all.py --images 2000 --dim 64 --rounds 1 --methods exact -- \
  $PY benchmarks/all_against_all.py --images 60502 --dim 512 --rounds 1 --threads 16 --methods "$METHODS"

if [ -n "$SKIP_GPU" ] || [ "$GPUS" -lt 2 ]; then
  record two_gpus skipped 0 "${SKIP_GPU:-one GPU on this machine: the two-GPU claim check needs two}" ""
  echo "== two_gpus: skipped"
else
  run two_gpus 20 two_gpus.txt bash -c "
    export CBIR_GPU_LOCK_DIR=\$(mktemp -d)
    claim='import time, torch; from workflow.devices import claim_device
with claim_device(\"auto\", 1, \"check\") as c:
    torch.zeros(1, device=c.device); print(c.index, c.device, flush=True); time.sleep(3)'
    $PY -c \"\$claim\" & $PY -c \"\$claim\"; wait"
fi

# report.md and report.json from the steps and their outputs.
$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
(out / "report.json").write_text(json.dumps({"steps": steps}, indent=2))
lines = ["# GPU session report", "", "| step | status | seconds | reason |", "|---|---|---|---|"]
lines += [f"| {s['step']} | {s['status']} | {s['seconds']} | {s['reason']} |" for s in steps]
for s in steps:
    path = out / s["output"] if s["output"] else None
    if path and path.is_file():
        text = path.read_text(errors="replace")
        lines += ["", f"## {s['step']}", "", "```", text[-4000:].rstrip(), "```"]
(out / "report.md").write_text("\n".join(lines) + "\n")
print(f"report: {out / 'report.md'}")
PY

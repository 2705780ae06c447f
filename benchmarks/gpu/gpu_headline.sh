#!/usr/bin/env bash
# The GPU headline in one call: the step matrix, then the full default recipe (40 epochs, full width, all 50,000
# training and 10,000 test images of the JPEG export) with the fastest correct setting and the training images
# augmented on the GPU (--augment-on device: ignite_cifar/data/device_augment.py), then RESULTS-GPU.md.
#
#   make gpu-kit                                  # once, here: wheels + data into .gpu/ (git-ignored)
#   OUT=/some/folder bash benchmarks/gpu/gpu_headline.sh                 # on the GPU machine ($OUT set there)
#   GPU_DRY_RUN=1 OUT=$(mktemp -d) bash benchmarks/gpu/gpu_headline.sh   # the same path on CPU, tiny, < 1 min
#
# Everything lands in $OUT (at most 8 files come back from the GPU machine): headline.log, captured_lr.json (does the
# CUDA-graph step use the lr the schedules set? benchmarks/speed/captured_lr_check.py), matrix.json, matrix.md,
# RESULTS-GPU.md and run.tar.gz (the run folder without its checkpoints). On a GPU it also runs the
# CUDA cases of tests/test_gradcam.py, which CPU machines skip.
# GPU_BUDGET_S (default 540) bounds the whole script: training gets a SIGTERM in time to stop at a safe point
# and still leave the report. Only the wheel install is skipped in the dry run (they are for Python 3.12).
set -uo pipefail
source "$(dirname "$0")/prelude.sh"
log_to headline.log

if [ ! -f "$KIT/cifar10-jpeg.tar.gz" ]; then
  echo "gpu_headline: $KIT/cifar10-jpeg.tar.gz is missing; run 'make gpu-kit' first" >&2
  exit 2
fi
WORK=$(mktemp -d)

step "1. packages and data"
if [ "$DRY" = 1 ]; then
  PY=${PYTHON:-.venv/bin/python}
else
  PY=python3
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" \
    "$KIT"/wheels/*.whl || exit 1
  export PYTHONPATH="$WORK/site:$PWD"
fi
tar xzf "$KIT/cifar10-jpeg.tar.gz" -C "$WORK" || exit 1
DATA="$WORK/cifar10-jpeg"

step "2. device and versions"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "cores: $(nproc); shared memory for DataLoader workers: $(df -h /dev/shm 2>/dev/null | tail -1)"
"$PY" benchmarks/gpu/gpu_report.py --env "$WORK/env.json" || exit 1

step "3. the captured step follows the schedules' lr (warmup, a plateau cut)"
if [ "$DRY" = 1 ]; then
  CHECK=(--device cpu --width 0.0625 --batch-size 8 --steps 6 --no-compile)
else
  CHECK=(--width 0.25 --steps 30)
fi
timeout 180 "$PY" benchmarks/speed/captured_lr_check.py "${CHECK[@]}" --json "$OUT/captured_lr.json"
echo "captured-step check exited with $?"

step "3b. training-step matrix"
if [ "$DRY" = 1 ]; then
  MATRIX=(--device cpu --width 0.125 --batch-sizes 32 --steps 2 --warmup 1 --compile off --bf16 off
          --channels-last both --epochs 1 --train-images 512 --budget-s 20)
  # width 0.125, not 0.0625: torch 2.14.1 on an AVX2-only CPU corrupts the heap in the backward of width 0.0625's
  # channels_last layer2 shortcut (Conv2d 4->8, 1x1, stride 2); seen 2026-12-01
  SIZE=(--device cpu --width 0.125 --epochs 1 --train-subset 512 --test-subset 200 --batch-size 32)
else
  MATRIX=(--budget-s "${GPU_MATRIX_BUDGET_S:-150}" --compile-mode "${GPU_COMPILE_MODE:-reduce-overhead}")
  SIZE=()
fi
"$PY" benchmarks/speed/step_matrix.py "${MATRIX[@]}" --json "$OUT/matrix.json" --markdown "$OUT/matrix.md" \
  --flags "$WORK/flags" || exit 1
read -r -a CHOSEN < "$WORK/flags"

step "4. the default recipe with ${CHOSEN[*]}"
TRAIN=(-m ignite_cifar train --dataset folder --data-dir "$DATA" --augment-on device
       --num-workers auto --output-dir "$WORK/runs" --run-name headline "${CHOSEN[@]}" "${SIZE[@]}")
LEFT=$((BUDGET_S - (SECONDS - START) - 45))   # 45 s kept for the report and the archive
TRAIN_START=$SECONDS
timeout --signal=TERM --kill-after=20 "$LEFT" "$PY" "${TRAIN[@]}"
RC=$?
if [ "$RC" != 0 ] && [ "$RC" != 124 ] && [ ! -s "$WORK/runs/headline/history.json" ]; then
  # A failure before the first epoch ended (the compiler, the device data path, ...) would waste the call:
  # try once more with no compilation and albumentations in 4 workers, in a fresh folder.
  echo "training failed ($RC) before its first epoch ended; retrying with --num-workers 4 --no-compile --augment-on cpu"
  rm -rf "$WORK/runs/headline"
  TRAIN+=(--num-workers 4 --no-compile --augment-on cpu)
  LEFT=$((BUDGET_S - (SECONDS - START) - 45))
  TRAIN_START=$SECONDS
  timeout --signal=TERM --kill-after=20 "$LEFT" "$PY" "${TRAIN[@]}"
  RC=$?
fi
TRAIN_WALL=$((SECONDS - TRAIN_START))
echo "training exited with $RC after $TRAIN_WALL s (limit $LEFT s)"

if [ "$DRY" != 1 ] && [ $((BUDGET_S - (SECONDS - START))) -gt 60 ]; then
  step "5. the CUDA cases of the GradCAM tests (skipped on CPU machines)"
  timeout $((BUDGET_S - (SECONDS - START) - 40)) "$PY" -m pytest -q -p no:cacheprovider tests/test_gradcam.py
fi

step "6. report and archive"
"$PY" benchmarks/gpu/gpu_report.py --env "$WORK/env.json" --matrix "$OUT/matrix.json" --captured "$OUT/captured_lr.json" \
  --run "$WORK/runs/headline" \
  --train-rc "$RC" --train-wall "$TRAIN_WALL" --train-limit "$LEFT" --command "python ${TRAIN[*]}" \
  --dry "$DRY" --out "$OUT/RESULTS-GPU.md"
tar czf "$OUT/run.tar.gz" -C "$WORK/runs" --exclude checkpoints headline
step "done: $(ls "$OUT" | tr '\n' ' ')"
rm -rf "$WORK"
exit "$RC"

#!/usr/bin/env bash
# A full-width study in one or more GPU calls: recipe YAMLs (benchmarks/study/recipes/*.yaml, each a change to --config
# assignment) at width 1.0 for 40 epochs, STUDY_LANES at a time, within GPU_BUDGET_S, on the device data path
# (--augment-on device), then STUDY-GPU.md. Each call resumes what the last one left unfinished.
#
#   make gpu-kit                                                   # once, here: wheels + data into .gpu/
#   OUT=/some/folder bash benchmarks/gpu/gpu_study.sh                  # on the GPU machine ($OUT set there)
#   GPU_DRY_RUN=1 OUT=$(mktemp -d) bash benchmarks/gpu/gpu_study.sh    # the same path on CPU, tiny, synthetic data
#
# STUDY_RECIPES: names in benchmarks/study/recipes/, in run order (default below). STUDY_FLAGS: extra training flags
# for every run (e.g. "--compile --amp on"), or `auto`: measure first (the captured step's lr check and a short
# step matrix, about a minute, into captured_lr.json and matrix.md) and train in the fastest correct mode. All runs share one TorchInductor/Triton cache, so a compiled graph is
# built once and reused by the later runs. STUDY_LANES=N (default 3) trains N recipes at once on the one GPU: a
# batch-128 step leaves most of the GPU idle, waiting on Python's kernel launches (on an H200, 2026-12-04, three
# at once trained 1.65x the images/s of one alone). Recipe i goes to lane i mod N and each lane runs its share
# back to back; every run's output lines in study.log start with "[recipe] ".
# Everything lands in $OUT: study.log, STUDY-GPU.md, study.json and runs.tar.gz (every finished run's folder
# without its checkpoints). A run still going when the budget runs out gets a SIGTERM (it stops at a safe point
# and saves a checkpoint) and is reported as unfinished, never as a result; recipes after it are reported as not
# started. The run folders stay in GPU_STUDY_DIR (default runs/gpu-study, git-ignored, so the machine keeps it
# between calls): the same command again resumes the unfinished runs from their checkpoints, skips the
# finished ones and starts the rest.
set -uo pipefail
source "$(dirname "$0")/prelude.sh"
STUDY_DIR=${GPU_STUDY_DIR:-runs/gpu-study}
mkdir -p "$STUDY_DIR" && RUNS=$(cd "$STUDY_DIR" && pwd)
RECIPES=${STUDY_RECIPES:-"combination-weight-std combination-weight-std-seed2 combination-weight-std-cut assignment combination-weight-std-late-cut combination combination-weight-std-label-smoothing assignment-seed2 combination-seed2 combination-weight-std-label-smoothing-seed2 combination-weight-std-hflip combination-weight-std-resnet34 combination-no-decay-norm-bias-weight-std combination-weight-std-lr2e-3 assignment-weight-std combination-adamw"}
read -r -a EXTRA <<< "${STUDY_FLAGS:-}"
LANES=${STUDY_LANES:-3}
[[ "$LANES" =~ ^[1-9][0-9]*$ ]] || { echo "gpu_study: STUDY_LANES must be a whole number >= 1, got '$LANES'" >&2; exit 2; }
RESERVE_S=40   # kept for the report and the archive
MIN_RUN_S=60   # a run given less than this is not started
log_to study.log

for name in $RECIPES; do
  [ -f "benchmarks/study/recipes/$name.yaml" ] || { echo "gpu_study: no benchmarks/study/recipes/$name.yaml" >&2; exit 2; }
done
WORK=$(mktemp -d)
export TORCHINDUCTOR_CACHE_DIR="$WORK/cache/inductor" TRITON_CACHE_DIR="$WORK/cache/triton"
export TORCHINDUCTOR_FX_GRAPH_CACHE=1 TORCHINDUCTOR_AUTOGRAD_CACHE=1

step "1. packages and data"
if [ "$DRY" = 1 ]; then
  PY=${PYTHON:-.venv/bin/python}
  DATA_FLAGS=(--dataset synthetic)   # the folder path and the kit are proven by gpu_headline.sh's dry run
  EPOCHS=${GPU_DRY_EPOCHS:-1}
  SIZE=(--device cpu --width 0.0625 --epochs "$EPOCHS" --train-subset 200 --test-subset 50 --batch-size 50
        --n-misclassified 2 --probe-every 0)
  MIN_RUN_S=1
else
  if [ ! -f "$KIT/cifar10-jpeg.tar.gz" ]; then
    echo "gpu_study: $KIT/cifar10-jpeg.tar.gz is missing; run 'make gpu-kit' first" >&2
    exit 2
  fi
  PY=python3
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" \
    "$KIT"/wheels/*.whl || exit 1
  export PYTHONPATH="$WORK/site:$PWD"
  # in the study folder, so that the runs' config.yaml still names it when a later call resumes or explains them
  [ -d "$RUNS/.data/cifar10-jpeg/train" ] || { mkdir -p "$RUNS/.data" && tar xzf "$KIT/cifar10-jpeg.tar.gz" \
    -C "$RUNS/.data"; } || exit 1
  DATA_FLAGS=(--dataset folder --data-dir "$RUNS/.data/cifar10-jpeg")
  EPOCHS=40
  SIZE=(--width 1.0 --epochs "$EPOCHS")
fi

step "2. device and versions"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PY" benchmarks/gpu/gpu_report.py --env "$WORK/env.json" || exit 1

if [ "${STUDY_FLAGS:-}" = auto ]; then
  # Speed first: does the captured step follow the schedules' lr, then the default's step at width 1.0,
  # batch 128, eager fp32 against bf16 and the captured (reduce-overhead) step; the study trains in the fastest
  # correct mode. Chosen once: a later call resumes its runs in the same mode ($RUNS/.study-flags).
  if [ -s "$RUNS/.study-flags" ]; then
    step "2b. speed first: the mode an earlier call chose, kept for its runs: $(cat "$RUNS/.study-flags")"
  else
    step "2b. speed first: the captured step's lr, then the step matrix picks the study's mode"
    if [ "$DRY" = 1 ]; then
      CHECK=(--device cpu --width 0.0625 --batch-size 8 --steps 6 --no-compile)
      # the dry runs' own width, without channels_last (see gpu_headline.sh on width 0.0625 in that layout); no
      # compiled entries, so no budget to give them
      MATRIX=(--device cpu --width 0.0625 --steps 2 --warmup 1)
      COMPILE=off
    else
      CHECK=(--width 1.0 --steps 30)
      MATRIX=(--width 1.0 --steps 20 --warmup 5 --compile-mode reduce-overhead --budget-s "${GPU_SPEED_BUDGET_S:-40}")
      COMPILE=both
    fi
    timeout 60 "$PY" benchmarks/speed/captured_lr_check.py "${CHECK[@]}" --json "$OUT/captured_lr.json"
    CHECK_RC=$?
    echo "captured-step check exited with $CHECK_RC"
    # a captured step that does not follow the lr (or a check that did not finish) is left out of the choice
    [ "$CHECK_RC" = 0 ] || COMPILE=off
    "$PY" benchmarks/speed/step_matrix.py "${MATRIX[@]}" --compile "$COMPILE" --bf16 both --batch-sizes 128 \
      --channels-last off --epochs 40 \
      --json "$OUT/matrix.json" --markdown "$OUT/matrix.md" --flags "$RUNS/.study-flags" \
      || echo "--amp off --no-channels-last --no-compile" > "$RUNS/.study-flags"
  fi
  read -r -a EXTRA < "$RUNS/.study-flags"
  echo "study mode: ${EXTRA[*]}"
fi

step "3. the recipes, $LANES at a time: $RECIPES"
: > "$WORK/status"
TRAIN=(-m ignite_cifar train "${DATA_FLAGS[@]}" --augment-on device --output-dir "$RUNS" "${SIZE[@]}"
       "${EXTRA[@]}")
run_state() {  # missing | finished | unfinished | explain | aborted (benchmarks/recipe_report.run_state)
  "$PY" -c 'import sys; from pathlib import Path; sys.path.insert(0, "benchmarks/study"); from recipe_report import run_state
print(run_state(Path(sys.argv[1]), int(sys.argv[2])))' "$RUNS/$1" "$EPOCHS"
}
recipe_command() {  # the call that brings recipe $1 closer to finished, by the state of its folder
  local name=$1 state
  state=$(run_state "$name") || return 1
  case "$state" in
    finished) echo "echo $name: finished in an earlier call, kept" ;;
    explain) echo "$PY -m ignite_cifar explain --run $RUNS/$name" ;;
    unfinished) echo "$PY -m ignite_cifar train --resume $RUNS/$name ${DATA_FLAGS[*]} --epochs $EPOCHS ${EXTRA[*]}" ;;
    *) [ "$state" = aborted ] && mv "$RUNS/$name" "$RUNS/aborted-$name-$(date +%Y%m%d-%H%M%S)"  # no checkpoint
       echo "$PY ${TRAIN[*]} --config assignment --config benchmarks/study/recipes/$name.yaml --run-name $name" ;;
  esac
}
run_recipe() {  # one recipe to its end or to the budget's; one line in $WORK/status
  local name=$1 left run_start rc command
  left=$((BUDGET_S - (SECONDS - START) - RESERVE_S))
  if [ "$left" -lt "$MIN_RUN_S" ]; then
    echo "$name: not started, $left s left of the budget"
    echo "$name -1 0 $left" >> "$WORK/status"
    return
  fi
  command=$(recipe_command "$name") || { echo "$name 1 0 $left" >> "$WORK/status"; return; }
  step "$name (limit $left s): $command"
  run_start=$SECONDS
  # shellcheck disable=SC2086  # the command is words without spaces inside them (paths from mktemp and the repo)
  timeout --signal=TERM --kill-after=20 "$left" $command 2>&1 | sed -u "s/^/[$name] /"
  rc=${PIPESTATUS[0]}
  echo "$name $rc $((SECONDS - run_start)) $left" >> "$WORK/status"
  echo "$name exited with $rc after $((SECONDS - run_start)) s; compile cache: $(du -sh "$WORK/cache" 2>/dev/null \
    | cut -f1)"
}
run_lane() {  # lane $1 of $LANES: recipes $1, $1 + LANES, ... of the list, back to back
  local index=0 name
  for name in $RECIPES; do
    if [ $((index % LANES)) -eq "$1" ]; then run_recipe "$name"; fi
    index=$((index + 1))
  done
}
LANE_PIDS=()
for ((lane = 0; lane < LANES; lane++)); do run_lane "$lane" & LANE_PIDS+=($!); done
wait "${LANE_PIDS[@]}"  # the lanes only: a bare `wait` would also wait for the log's tee, which never ends
for name in $RECIPES; do grep "^$name " "$WORK/status"; done > "$WORK/status.in-order"  # the report's row order

step "4. report and archive"
"$PY" benchmarks/gpu/gpu_study_report.py --env "$WORK/env.json" --status "$WORK/status.in-order" --runs "$RUNS" \
  --command "python ${TRAIN[*]} --config assignment --config benchmarks/study/recipes/R.yaml --run-name R" \
  --budget "$BUDGET_S" --lanes "$LANES" --dry "$DRY" --out "$OUT/STUDY-GPU.md" --json "$OUT/study.json"
REPORT_RC=$?
FINISHED=$("$PY" -c "import json, sys; print(' '.join(r['name'] for r in json.load(open(sys.argv[1])) if r['finished']))" \
  "$OUT/study.json" 2>/dev/null)
if [ -n "$FINISHED" ]; then
  # shellcheck disable=SC2086
  tar czf "$OUT/runs.tar.gz" -C "$RUNS" --exclude checkpoints $FINISHED
fi
step "done: $(ls "$OUT" | tr '\n' ' ')"
rm -rf "$WORK"  # the packages, data and compile cache; the run folders stay in $RUNS for the next call
exit "$REPORT_RC"

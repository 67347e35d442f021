#!/usr/bin/env bash
# The GPU check: every CUDA path (tests marked `cuda`), the augmentation benchmark, where a
# training step's time goes, cohorts against solo training (model-steps/s, MFU, a graphed step:
# tests/gpu/cohort_bench.py), `augbench plan` of the whole fashion-mnist protocol, and timed
# slices of it (tests/gpu/slice.yaml at 1 and at several workers per GPU, and
# tests/gpu/slice-generators.yaml with generators and quality), each with the plan's estimate
# beside the measured time, from which the summary scales the whole protocol's estimate; the
# figures go to one JSON file. Meant for a machine with CUDA and no package registry; about 8
# minutes on one H200.
#
#   tests/gpu/check.sh prepare    # here, where pip reaches a registry: the wheels that a stock
#                                   # CUDA image (Python 3.12, torch, pandas, scipy, ... but not
#                                   # torch-fidelity or optuna) lacks, and Fashion-MNIST, into the
#                                   # git-ignored .gpu-check/ (about 37 MB)
#   tests/gpu/check.sh [OUT]      # there: install, check, measure; writes OUT/gpu-check.json
#
# Knobs (environment): PYTHON (default python3), WORKERS (default "1 8": workers per GPU to time
# the slice at), PROTOCOL (default fashion-mnist: the plan stage), CONFIG (default
# tests/gpu/slice.yaml) and SLICE (--set overrides without spaces) of the slice, STAGE_TIMEOUT (seconds per stage),
# GENERATOR_CONFIG (default tests/gpu/slice-generators.yaml, timed at the last of WORKERS),
# COHORT_ARGS (arguments of cohort_bench.py), DEVICE (default cuda; cpu rehearses the script),
# INSTALL (default 1; 0 uses the Python as it is), STAGES (default "tests augment profile cohort
# plan slice generators").
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
KIT=.gpu-check

if [ "${1:-}" = prepare ]; then
  set -e
  mkdir -p "$KIT/wheels" "$KIT/data"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$KIT/wheels" torch-fidelity==0.4.0 optuna==5.0.0 alembic==1.20.1 sqlalchemy==2.1.9 mako colorlog \
    tabulate mlxtend==0.25.0 autorank==1.3.0 baycomp
  cp -r /usr/share/datasets/fashion-mnist "$KIT/data/"  # apt-get install dataset-fashion-mnist
  du -sh "$KIT"
  exit 0
fi

OUT=${1:-${OUT:-runs/gpu-check}}
WORKERS=${WORKERS:-1 8}
PROTOCOL=${PROTOCOL:-fashion-mnist}
CONFIG=${CONFIG:-tests/gpu/slice.yaml}
SLICE=${SLICE:-}
STAGE_TIMEOUT=${STAGE_TIMEOUT:-200}
DEVICE=${DEVICE:-cuda}
GENERATOR_CONFIG=${GENERATOR_CONFIG:-tests/gpu/slice-generators.yaml}
STAGES=${STAGES:-tests augment profile cohort plan slice generators}
mkdir -p "$OUT"
LOG="$OUT/gpu-check.log"
stage() { echo "== $(date +%T) $*" | tee -a "$LOG"; }
wanted() { [[ " $STAGES " == *" $1 "* ]]; }

export PYTHONUNBUFFERED=1
if [ "${INSTALL:-1}" = 1 ]; then
  stage "install the missing packages (no index) and the project (--no-deps)"
  SITE=/tmp/augbench-site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$KIT"/wheels/*.whl >>"$LOG" 2>&1 \
    || { echo "augbench: error: could not install $KIT/wheels; run 'tests/gpu/check.sh prepare' first" >&2; exit 2; }
  rm -rf "$SITE/tests"  # torch-fidelity's wheel ships a top-level `tests` package
  export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
  "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . >>"$LOG" 2>&1 \
    || echo "  (editable install failed; the project runs from PYTHONPATH)" | tee -a "$LOG"
fi
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -d "$KIT/data/fashion-mnist" ]; then
  mkdir -p /usr/share/datasets && ln -s "$PWD/$KIT/data/fashion-mnist" /usr/share/datasets/fashion-mnist
fi
"$PY" tests/gpu/summary.py environment "$OUT" 2>>"$LOG"

if wanted tests; then
  stage "tests marked cuda"
  timeout "$STAGE_TIMEOUT" "$PY" -m pytest -q -m cuda -p no:cacheprovider --junitxml="$OUT/cuda-tests.xml" tests \
    2>&1 | tee -a "$LOG" | tail -15
fi

wanted augment && stage "bench-augment on $DEVICE (reference: DataLoader with 8 workers)"
for policy in ${POLICIES:-basic trivialaugment}; do
  wanted augment || break
  timeout "$STAGE_TIMEOUT" "$PY" -m bench.cli bench-augment --dataset fashion-mnist --policy "$policy" \
    --device "$DEVICE" --loader-workers 8 --images 60000 --steps 200 --json "$OUT/bench-augment-$policy.json" \
    2>&1 | tee -a "$LOG"
done

if wanted profile; then
  stage "where a training step's time goes"
  timeout "$STAGE_TIMEOUT" "$PY" tests/gpu/step_profile.py "$OUT/step-profile.json" 2>&1 | tee -a "$LOG" | head -40
fi

if wanted cohort; then
  stage "cohorts against solo training"
  # shellcheck disable=SC2086  # COHORT_ARGS is a list of arguments
  timeout "$STAGE_TIMEOUT" "$PY" tests/gpu/cohort_bench.py "$OUT/cohort-bench.json" ${COHORT_ARGS:-} 2>&1 \
    | grep -v '^W[0-9]' | tee -a "$LOG"
fi

for workers in $WORKERS; do
  wanted plan || break
  stage "augbench plan $PROTOCOL (the whole protocol) with $workers worker(s) on $DEVICE"
  timeout "$STAGE_TIMEOUT" "$PY" -m bench.cli plan "$PROTOCOL" --set device="$DEVICE" --set workers="$workers" \
    --out "$OUT/full-w$workers" --json "$OUT/plan-full-w$workers.json" 2>&1 | tee -a "$LOG"
done

# timed_slice NAME CONFIG WORKERS: plan and run CONFIG ($SLICE) into $OUT/NAME, timed
timed_slice() {
  local name=$1 config=$2 workers=$3
  stage "slice $config ($SLICE) with $workers worker(s) on $DEVICE"
  # shellcheck disable=SC2086  # SLICE is a list of arguments
  "$PY" -m bench.cli plan "$config" $SLICE --set device="$DEVICE" --set workers="$workers" \
    --out "$OUT/$name" --json "$OUT/plan-$name.json" >>"$LOG" 2>&1
  local start code
  start=$(date +%s%N)
  # shellcheck disable=SC2086
  timeout "$STAGE_TIMEOUT" "$PY" -m bench.cli run "$config" $SLICE --set device="$DEVICE" --set workers="$workers" \
    --out "$OUT/$name" >"$OUT/$name.log" 2>&1
  code=$?
  grep -v '%|' "$OUT/$name.log" | tail -4 | tee -a "$LOG"
  echo "{\"config\": \"$config\", \"workers\": $workers, \"exit\": $code, \"ms\": $(( ($(date +%s%N) - start) / 1000000 ))}" \
    >"$OUT/$name.json"
}

for workers in $WORKERS; do
  wanted slice || break
  timed_slice "slice-w$workers" "$CONFIG" "$workers"
done
if wanted generators; then
  timed_slice "slice-generators-w${WORKERS##* }" "$GENERATOR_CONFIG" "${WORKERS##* }"
fi

stage "summary"
"$PY" tests/gpu/summary.py summary "$OUT" | tee -a "$LOG"

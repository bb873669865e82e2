#!/usr/bin/env bash
# GPU check (issue 19): the CUDA tests, then the scale benchmark (benchmarks/scale.py, γ = 20, streamed
# from .mmm) at 1M and 10M cells with device="cuda", within a time budget (default 480 s), then a summary.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [--budget SECONDS] [--dir DIR] [--base-cells N] [--skip-tests]
#       [--epochs E]
#
# The 1M input is built by scale.py (real Kang cells resampled); the 10M input is a shard directory of
# ten hard links to the 1M file (the same cells ten times: building 10M resampled cells alone would take
# longer than the budget), with the obs table repeated. Goals checked: 10M cells in <= 600 s, peak host
# memory <= 32 GB.
# --dry-run, or no CUDA device: the same steps on the CPU at tiny sizes (N = --base-cells, default
# 20,000, and 2 N as two linked shards), 2 training epochs (--epochs; on CUDA 30 by default); the goals
# are not checked then.
# Environment: PYTHON (default .venv/bin/python, else python3).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD

DRY=0
BUDGET=${GPU_CHECK_BUDGET_S:-480}
DIR=""
BASE=""
SKIP_TESTS=0
EPOCHS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --budget) BUDGET=$2; shift ;;
    --dir) DIR=$2; shift ;;
    --base-cells) BASE=$2; shift ;;
    --skip-tests) SKIP_TESTS=1 ;;
    --epochs) EPOCHS=$2; shift ;;
    -h|--help) sed -n 2,16p "$0"; exit 0 ;;
    *) echo "gpu_check: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }

HAS_CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
MODE="cuda"
if [ "$DRY" = 1 ] || [ "$HAS_CUDA" != 1 ]; then
  MODE="dry run on the CPU"
  [ "$DRY" = 1 ] || MODE="$MODE (no CUDA device found)"
  DRY=1
fi
if [ "$DRY" = 1 ]; then
  DEVICE=cpu; BASE=${BASE:-20000}; FACTOR=2; EXTRA=(--train-epoch "${EPOCHS:-2}" --max-train-cells 5000)
else
  # 30 training epochs unless --epochs: the package default is untrained, but the CUDA path of the training
  # is what this check must prove (train_epoch=30 was the default until 2026-12-04)
  DEVICE=cuda; BASE=${BASE:-1000000}; FACTOR=10; EXTRA=(--train-epoch "${EPOCHS:-30}")
fi
BIG=$(( BASE * FACTOR ))
DIR=${DIR:-/tmp/scm_gpu_check}
mkdir -p "$DIR"
LOG="$DIR/gpu_check.log"
: > "$LOG"

# the real data: ../shared/data beside the repository (or ./shared/data, linked there)
if [ ! -d "$ROOT/../shared/data" ] && [ -d "$ROOT/shared/data" ]; then
  ln -sfn "$ROOT/shared" "$ROOT/../shared" 2>/dev/null || true
fi

SUMMARY=()
FAILED=0
note() { SUMMARY+=("$1"); echo "== $1"; }

echo "gpu_check: $MODE; device=$DEVICE; sizes $BASE and $BIG cells; budget ${BUDGET} s; dir $DIR"
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import os, platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB; host cores: {len(os.sched_getaffinity(0))}")
EOF

# 1. the CUDA tests (they skip without a GPU) and the device-argument test (runs everywhere)
if [ "$SKIP_TESTS" = 1 ]; then
  note "tests: skipped (--skip-tests)"
else
  T=$(( $(left) < 150 ? $(left) : 150 ))
  OUT=$(timeout "$T" "$PY" -m pytest -q -p no:cacheprovider tests/test_scale.py tests/test_metacell.py \
        -k "cuda or gpu or device" 2>&1); RC=$?
  echo "$OUT" | tail -5 | tee -a "$LOG"
  LAST=$(echo "$OUT" | grep -E "passed|failed|skipped|error|no tests ran" | tail -1)
  if [ $RC = 0 ]; then note "tests: ok ($LAST)"; else note "tests: FAILED rc=$RC ($LAST)"; FAILED=1; fi
fi

# 2. the inputs: BASE cells built by scale.py; BIG cells = FACTOR hard links to it, as shards
make_big() {
  "$PY" - "$DIR" "$BASE" "$BIG" <<'EOF'
import json, os, shutil, sys
from pathlib import Path

import pandas as pd

import scmetacell as scm
from scmetacell.io._writer import COLLECTION_FILE, COLLECTION_FORMAT

d, base, big = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
src, dst = d / f"cells_{base}.mmm", d / f"cells_{big}.mmm"
if not dst.exists():
    with scm.io.open_mmm(src) as m:
        genes = m.genes_count
    tmp = d / f".tmp_cells_{big}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    shards = []
    for i in range(big // base):
        name = f"shard-{i:05d}.mmm"
        try:
            os.link(src, tmp / name)
        except OSError:
            os.symlink(src.resolve(), tmp / name)
        shards.append({"file": name, "profiles_count": base})
    meta = {"format": COLLECTION_FORMAT, "version": 1, "profiles_count": big, "genes_count": genes,
            "shards": shards}
    (tmp / COLLECTION_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, dst)
obs_big = d / f"obs_{big}.pkl"
if not obs_big.exists():
    obs = pd.read_pickle(d / f"obs_{base}.pkl")
    obs = pd.concat([obs] * (big // base))
    obs.index = "cell" + pd.RangeIndex(big).astype(str)
    obs.to_pickle(obs_big)
print(f"{dst}: {big} cells ({big // base} links to {src.name})")
EOF
}

run_size() {  # $1 = cells
  local n=$1 T
  T=$(left)
  if [ "$T" -lt 20 ]; then note "$n cells: not run (budget spent)"; FAILED=1; return; fi
  echo "-- scale.py --cells $n (timeout ${T} s)"
  OUT=$(timeout "$T" "$PY" benchmarks/scale.py --cells "$n" --formats mmm --dir "$DIR" --device "$DEVICE" \
        "${EXTRA[@]}" 2>&1); RC=$?
  echo "$OUT" >> "$LOG"
  ROW=$(echo "$OUT" | grep -E "^ *$n +mmm wall=" | tail -1)
  echo "$OUT" | grep -E "^#|wall=" | tail -4
  if [ $RC = 0 ] && [ -n "$ROW" ]; then
    note "$n cells: $(echo "$ROW" | sed -E 's/^ *[0-9]+ +mmm //')"
    cp "$DIR/scale_results.json" "$DIR/scale_results_$n.json" 2>/dev/null
  elif [ $RC = 124 ]; then
    note "$n cells: TIMED OUT after ${T} s (budget)"; FAILED=1
  else
    note "$n cells: FAILED rc=$RC ($(echo "$OUT" | tail -1))"; FAILED=1
  fi
}

run_size "$BASE"
if [ -e "$DIR/cells_$BASE.mmm" ]; then
  if make_big >> "$LOG" 2>&1; then run_size "$BIG"; else note "$BIG cells: input not built (see $LOG)"; FAILED=1; fi
fi

# 3. summary
ELAPSED=$(( $(date +%s) - START ))
echo
echo "==== gpu_check summary ($MODE, device=$DEVICE, ${ELAPSED} s of ${BUDGET} s) ===="
for line in "${SUMMARY[@]}"; do echo "  $line"; done
if [ "$DRY" = 0 ] && [ -f "$DIR/scale_results_$BIG.json" ]; then
  "$PY" - "$DIR/scale_results_$BIG.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))[-1]
ok_t, ok_m = r["wall_s"] <= 600, r["peak_rss_gb"] * 1.073741824 <= 32
print(f"  goal 10M <= 600 s: {'ok' if ok_t else 'MISSED'} ({r['wall_s']:.0f} s); "
      f"host memory <= 32 GB: {'ok' if ok_m else 'MISSED'} ({r['peak_rss_gb']:.2f} GiB)")
EOF
elif [ "$DRY" = 1 ]; then
  echo "  goals (10M <= 600 s, host memory <= 32 GB): not checked in a dry run"
fi
if [ "$ELAPSED" -gt "$BUDGET" ]; then echo "  over the budget"; FAILED=1; fi
echo "  log: $LOG"
if [ "$FAILED" = 0 ]; then echo "gpu_check: OK"; else echo "gpu_check: FAILED"; fi
exit "$FAILED"

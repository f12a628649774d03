#!/usr/bin/env bash
# multirun.sh — run a named sweep preset, show its progress, then report on what it produced.
# The main entry point for users:
#
#   ./multirun.sh [options] [PRESET] [hydra overrides...]
#   ./multirun.sh --help                 lists the presets
#   ./multirun.sh reproduce VERSION [--subset NAME] [--out DIR]
#                                        re-runs a subset of the committed baseline results/baselines/VERSION
#                                        and checks every number against its manifest's tolerances
#                                        (python -m bench.baseline; `python -m bench.baseline list
#                                        results/baselines/VERSION` names the subsets)
#
# Options: --sweep-id NAME (default: the preset's name), --dry-run (plan and list the jobs, run
# nothing), --verbose (stream every job's output, not only its status lines), --no-report (print the
# runs table instead of running the analysis report).
#
# PRESET is a suite (below) or any conf/experiment/<name>.yaml; the default is `quick`. A Hydra sweep
# is one cartesian product and a β grid belongs to one method, so a suite is several sweeps (one
# `python -m bench.train -m experiment=<preset>` each) that share one sweep id: their records land in
# one folder, <runs root>/<sweep id>/, and the analysis reads them together. The tune_* presets are Optuna
# studies (hydra/sweeper=optuna): each trial's values are chosen as the study goes, the studies are stored
# in <runs root>/<sweep id>/studies/, and re-running the command resumes them.
#
# The sweep id defaults to the preset's name, so re-running a preset skips every run that already
# completed (same config hash) and redoes the failed ones. Overrides go to every sweep of a suite:
# `dataset=sentiment`, `hydra/launcher=slurm`, `logger=wandb`, `budget=fast` (a smoke test, whose runs
# go to <sweep id>-fast, apart from the real runs of the preset), ...
# Locally the sweeps use the joblib launcher: 2 parallel jobs, each on one thread (hardware=cpu),
# about twice the throughput of one job using both cores of a small CPU. `hydra.launcher.n_jobs=N`
# changes the count; any `hydra/launcher=...` (basic, joblib, slurm) replaces the default.
#
# Before anything runs, every job's config is composed and validated, and its run folder computed, so a
# config error fails here before any compute, and progress and failures are counted from the records
# themselves, whatever the launcher (`python -m bench.sweeps` does the planning and the counting).
# Exits non-zero when any run failed (after the report).
#
# Environment: IMI_BENCH_RUNS / IMI_BENCH_CACHE (runs root and cache root; default ./runs and
# ./.cache/imi-bench), PYTHON (default: python), MULTIRUN_PROGRESS_EVERY (seconds, default 10).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python}"
PROGRESS_EVERY="${MULTIRUN_PROGRESS_EVERY:-10}"
DEFAULT_PRESET=quick

# --- presets, planning and progress: bench/sweeps/ (python -m bench.sweeps) -------------------------------

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  "$PYTHON" -m bench.sweeps list
}

# count_runs PLAN_FILE SINCE_EPOCH MODE : the planned runs' status from their records. MODE progress: one
# line of counts; final: the counts and every run without a completed record (exit status 1 if any);
# failed: their number; table: one line per run with its status and objective metric.
count_runs() {
  "$PYTHON" -m bench.sweeps count "$@"
}

# watch_progress PLAN_FILE SINCE_EPOCH : prints the counts whenever they change (runs in the background).
watch_progress() {
  local last="" line
  while sleep "$PROGRESS_EVERY"; do
    line="$(count_runs "$1" "$2" progress 2>/dev/null)" || continue
    if [[ "$line" != "$last" ]]; then
      echo "$line  ($(( $(date +%s) - ${2%.*} )) s)"
      last="$line"
    fi
  done
}

# The lines of a job's output worth seeing live; everything goes to the log file.
LIVE_LINES='^\[imi-bench\] (completed|failed|skipped|error|study|trial)|^\[multirun\]|Launching|Error|error:'

# --- arguments --------------------------------------------------------------------------------------------

if [[ "${1:-}" == reproduce ]]; then
  [[ $# -ge 2 && "$2" != -* ]] || { echo "multirun.sh: reproduce needs a baseline version, e.g. ./multirun.sh reproduce v1" >&2; exit 2; }
  exec "$PYTHON" -m bench.baseline reproduce "$ROOT/results/baselines/$2" "${@:3}"
fi

SWEEP_ID=""
DRY_RUN=0
VERBOSE=0
REPORT=1
PRESET=""
OVERRIDES=()
while (( $# )); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --sweep-id) [[ $# -ge 2 ]] || { echo "multirun.sh: --sweep-id needs a name" >&2; exit 2; }
                SWEEP_ID="$2"; shift ;;
    --sweep-id=*) SWEEP_ID="${1#*=}" ;;
    --dry-run) DRY_RUN=1 ;;
    --verbose) VERBOSE=1 ;;
    --no-report) REPORT=0 ;;
    -m|--multirun) ;;  # every preset is a multirun already
    -*) echo "multirun.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *=*) OVERRIDES+=("$1") ;;
    *) if [[ -z "$PRESET" ]]; then PRESET="$1"
       else echo "multirun.sh: two presets given ($PRESET, $1); overrides look like key=value" >&2; exit 2; fi ;;
  esac
  shift
done
PRESET="${PRESET:-$DEFAULT_PRESET}"
SWEEP_ID="${SWEEP_ID:-$PRESET}"
if ! SWEEPS="$("$PYTHON" -m bench.sweeps steps "$PRESET")"; then
  echo "multirun.sh: unknown preset '$PRESET'; run ./multirun.sh --help for the list" >&2
  exit 2
fi
[[ "$SWEEP_ID" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "multirun.sh: --sweep-id '$SWEEP_ID' must be letters, digits, . _ -" >&2; exit 2; }

# joblib with 2 single-thread jobs, unless the user names a launcher
LAUNCHER=(hydra/launcher=joblib)
for override in ${OVERRIDES[@]+"${OVERRIDES[@]}"}; do
  [[ "$override" == hydra/launcher=* ]] && LAUNCHER=()
done
# interleaved progress bars from parallel jobs are noise: the progress line below replaces them
COMMON=(progress=false ${LAUNCHER[@]+"${LAUNCHER[@]}"} ${OVERRIDES[@]+"${OVERRIDES[@]}"})

export IMI_BENCH_SWEEP_ID="$SWEEP_ID"
STEPS=()
while IFS= read -r sweep; do
  STEPS+=("$sweep $(printf '%q ' "${COMMON[@]}")")
done <<< "$SWEEPS"

# --- plan ---------------------------------------------------------------------------------------------------

WORK="$(mktemp -d "${TMPDIR:-/tmp}/multirun.XXXXXX")"
WATCHER=""
cleanup() {
  [[ -n "$WATCHER" ]] && kill "$WATCHER" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
# Ctrl-C reaches the running sweep (same process group) and Hydra exits; without this trap bash would
# take that as handled and start the next sweep of the suite.
interrupted() {
  echo "[multirun] interrupted: completed runs are kept; re-run the same command to resume" >&2
  exit 130
}
trap interrupted INT TERM

PLAN="$WORK/plan.tsv"
echo "[multirun] preset $PRESET: composing and validating every job..."
"$PYTHON" -m bench.sweeps plan "$PLAN" "${STEPS[@]}"
SWEEP_DIR="$(head -n 1 "$PLAN")"
SWEEP_NAME="$(basename "$SWEEP_DIR")"  # the sweep id, with -fast for smoke runs (conf/budget/fast.yaml)
# the distinct runs, and every Optuna study's trials (a study's runs are known only as it goes)
N_RUNS="$("$PYTHON" -m bench.sweeps show "$PLAN" size)"
START="$(date +%s)"
echo "[multirun] sweep id $SWEEP_NAME: $("$PYTHON" -m bench.sweeps show "$PLAN" describe); records go to $SWEEP_DIR/<run id>/"
count_runs "$PLAN" "$START" progress | sed 's/ done:/ already done:/'
echo "[multirun] launcher: ${LAUNCHER[*]:-as overridden}; re-running this command skips completed runs"
if (( DRY_RUN )); then
  "$PYTHON" -m bench.sweeps show "$PLAN" list | sed 's/^/[multirun]   /; s/\t/   sweep /'
  exit 0
fi

# --- run ------------------------------------------------------------------------------------------------------

LOG_DIR="multirun/$SWEEP_NAME/$(date +%Y-%m-%d_%H-%M-%S)"
mkdir -p "$LOG_DIR"
watch_progress "$PLAN" "$START" &
WATCHER=$!
FAILED_SWEEPS=0
index=0
for step in "${STEPS[@]}"; do
  index=$((index + 1))
  name="$(sed 's/^experiment=\([^ ]*\).*/\1/' <<< "$step")"
  log="$LOG_DIR/$index-$name.log"
  eval "args=($step)"  # the step was built with printf %q: this splits it back into its words
  echo "[multirun] sweep $index/${#STEPS[@]}: python -m bench.train -m ${args[*]}"
  echo "[multirun]   full output: $log"
  # Hydra's own output folder for the sweep (configs, per-job logs), unless the user chose one
  [[ " ${args[*]} " == *" hydra.sweep.dir="* ]] || args+=("hydra.sweep.dir=$LOG_DIR/$index-$name")
  if (( VERBOSE )); then show=(cat); else show=(grep --line-buffered -E "$LIVE_LINES"); fi
  # In the foreground, so that Ctrl-C reaches the sweep. The status is the sweep's (PIPESTATUS[0]),
  # not grep's, which fails when no line matched.
  "$PYTHON" -m bench.train -m "${args[@]}" 2>&1 | tee "$log" | "${show[@]}" && status=0 || status=${PIPESTATUS[0]}
  if (( status != 0 )); then
    # a job that raised (rather than writing a failed record) makes Hydra exit non-zero
    FAILED_SWEEPS=$((FAILED_SWEEPS + 1))
    echo "[multirun] sweep $index exited with status $status; the end of $log:"
    tail -n 15 "$log" | sed 's/^/    /'
  fi
done
kill "$WATCHER" 2>/dev/null || true
WATCHER=""
echo "[multirun] all sweeps ended after $(( $(date +%s) - START )) s"

# --- report -------------------------------------------------------------------------------------------------

REPORT_DIR="$SWEEP_DIR/report"
REPORTED=0
if (( ! REPORT )); then
  echo "[multirun] --no-report: the runs table instead:"
# is the analysis package importable here (found without importing it, which is slow: docs/design.md §12)
elif "$PYTHON" -c "import importlib.util as u; raise SystemExit(u.find_spec('analysis') is None)" 2> /dev/null; then
  echo "[multirun] python -m analysis report $SWEEP_DIR --out $REPORT_DIR"
  if "$PYTHON" -m analysis report "$SWEEP_DIR" --out "$REPORT_DIR"; then
    REPORTED=1
  else
    echo "[multirun] the analysis report failed (above); the runs table instead:"
  fi
else
  echo "[multirun] no analysis package here (python -m analysis); the runs table instead:"
fi
if (( ! REPORTED )); then
  count_runs "$PLAN" "$START" table
fi

status=0
count_runs "$PLAN" "$START" final || status=1
echo "[multirun] records: $SWEEP_DIR/<run id>/record.json (+ history.jsonl)"
if (( REPORTED )); then
  echo "[multirun] report:  $REPORT_DIR/report.md"
fi
echo "[multirun] Hydra logs: $LOG_DIR/"
if (( status != 0 || FAILED_SWEEPS != 0 )); then
  echo "[multirun] FAILED: $(count_runs "$PLAN" "$START" failed) of $N_RUNS runs have no completed record" \
       "($FAILED_SWEEPS of ${#STEPS[@]} sweeps exited non-zero); re-run the same command to redo them" >&2
  exit 1
fi
echo "[multirun] all $N_RUNS runs completed"

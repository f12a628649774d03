#!/usr/bin/env bash
# multirun.sh — run a named sweep preset, show its progress, then report on what it produced
# (DESIGN §10). The main entry point for users:
#
#   ./multirun.sh [options] [PRESET] [hydra overrides...]
#   ./multirun.sh --help                 lists the presets
#
# Options: --sweep-id NAME (default: the preset's name), --dry-run (plan and list the jobs, run
# nothing), --verbose (stream every job's output, not only its status lines), --no-report (print the
# runs table instead of running the analysis report).
#
# PRESET is a suite (below) or any conf/experiment/<name>.yaml; the default is `quick`. A Hydra sweep
# is one cartesian product and a β grid belongs to one method, so a suite is several sweeps (one
# `python -m bench.train -m experiment=<preset>` each) that share one sweep id: their records land in
# one folder, <runs root>/<sweep id>/, and the analysis reads them together.
#
# The sweep id defaults to the preset's name, so re-running a preset skips every run that already
# completed (same config hash) and redoes the failed ones. Overrides go to every sweep of a suite:
# `dataset=sentiment`, `hydra/launcher=slurm`, `logger=wandb`, `budget=fast` (a smoke test), ...
# Locally the sweeps use the joblib launcher: 2 parallel jobs, each on one thread (hardware=cpu),
# about twice the throughput of one job using both cores of a small CPU. `hydra.launcher.n_jobs=N`
# changes the count; any `hydra/launcher=...` (basic, joblib, slurm) replaces the default.
#
# Before anything runs, every job's config is composed and validated, and its run folder computed, so a
# config error fails here before any compute, and progress and failures are counted from the records
# themselves, whatever the launcher. Exits non-zero when any run failed (after the report).
#
# Environment: IMI_BENCH_RUNS / IMI_BENCH_CACHE (runs root and cache root; default ./runs and
# ./.cache/imi-bench), PYTHON (default: python), MULTIRUN_PROGRESS_EVERY (seconds, default 10).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python}"
PROGRESS_EVERY="${MULTIRUN_PROGRESS_EVERY:-10}"
DEFAULT_PRESET=quick
# The built-in tasks; experiment/compare.yaml sweeps the same list (tests/test_presets.py checks it).
BUILTIN_DATASETS=arithmetic,arithmetic_noisy,sentiment,sentiment_noisy,verbosity

# --- presets ----------------------------------------------------------------------------------------

# Suites: name -> one line per sweep ("experiment=<preset> [extra overrides]"). Any other name that has
# a conf/experiment/<name>.yaml is a one-sweep suite of itself.
suite_sweeps() {
  case "$1" in
    quick)
      echo "experiment=quick_dpo"
      echo "experiment=quick_imi" ;;
    compare)
      echo "experiment=compare"
      for grid in dpo_beta_grid ipo_beta_grid simpo_grid; do
        echo "experiment=$grid dataset=$BUILTIN_DATASETS"
      done ;;
    beta_sensitivity)
      # the citable testbed study (results/beta_sensitivity/): the DPO β grid, a documented SimPO subset
      # (β ∈ {2, 10} × γ/β ∈ {0.15, 0.5}: both ends of the β range, the default γ/β and a small one), and
      # the IMI methods at their defaults, on every built-in task, 5 seeds
      echo "experiment=dpo_beta_grid dataset=$BUILTIN_DATASETS"
      echo "experiment=simpo_grid dataset=$BUILTIN_DATASETS method.beta=2.0,10.0 method.gamma_beta_ratio=0.15,0.5"
      echo "experiment=imi_defaults dataset=$BUILTIN_DATASETS method=rmipo,imi_dpo,imi_simpo" ;;
    smollm2)
      # the real-model lane (DESIGN §13): DPO β grid and the IMI methods on SmolLM2-135M-Instruct
      echo "experiment=smollm2_dpo"
      echo "experiment=smollm2_imi" ;;
    ablations)
      for ablation in regulator pmi_source margin_units warmup marginal_context; do
        echo "experiment=ablation_$ablation"
      done ;;
    *)
      [[ -f "$ROOT/conf/experiment/$1.yaml" ]] || return 1
      echo "experiment=$1" ;;
  esac
}

suite_description() {
  case "$1" in
    quick) echo "DPO over 3 β × 2 seeds + rmipo and imi_dpo × 2 seeds on sentiment, short SFT (< 10 min on 2 CPU cores)" ;;
    compare) echo "the headline: every method at its defaults + the DPO, IPO and SimPO grids, on every built-in task, 3 seeds" ;;
    beta_sensitivity) echo "the citable testbed study: DPO β grid + SimPO 2×2 subset + rmipo, imi_dpo, imi_simpo on every built-in task, 5 seeds (325 runs)" ;;
    smollm2) echo "the real-model lane: DPO β grid + rmipo and imi_dpo on SmolLM2-135M-Instruct (constraints task; needs the smollm2 extra)" ;;
    ablations) echo "every ablation_* preset: regulator × base loss, PMI source, margin units, warm-up, marginal context" ;;
  esac
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  echo "Suites:"
  for suite in quick beta_sensitivity compare ablations smollm2; do
    printf '  %-27s %s\n' "$suite" "$(suite_description "$suite")"
  done
  echo "Experiment presets (conf/experiment/, one Hydra sweep each):"
  local file name
  for file in "$ROOT"/conf/experiment/*.yaml; do
    name="$(basename "$file" .yaml)"
    # the first header line of each preset reads "# <name> — <what it measures>"
    printf '  %-27s %s\n' "$name" "$(sed -n "s/^# $name — //p" "$file" | head -n 1)"
  done
}

# --- helpers (Python: Hydra composes the configs, bench names the runs) ----------------------------------

# plan_sweeps PLAN_FILE STEP... : STEP = the overrides of one sweep, as one string. Expands each sweep
# into its jobs exactly as Hydra's basic sweeper does (hydra.sweeper.params of the preset, then the
# command-line overrides, cartesian product), composes and validates every job's config (~0.1 s a
# job), and writes PLAN_FILE: the sweep folder on its first line, then one line per job,
# "<run dir>\t<config hash>\t<sweep index>". Prints a summary; fails on the first bad config, naming it.
plan_sweeps() {
  "$PYTHON" - "$ROOT/conf" "$@" <<'PY'
import shlex
import sys
import warnings
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from bench import records
from bench.config import validate_config
from bench.loggers import redact_secrets
from bench.preflight import check_choices, check_launcher, check_secrets, redact_text
from bench.records import run_identity
from bench.redaction import redact_overrides


def refuse(message: str) -> None:
    """A bad config is a user's mistake: the message alone, exit status 2 (as `python -m bench.train`)."""
    print(redact_text(message), file=sys.stderr)
    sys.exit(2)


# Hydra 1.3 warns on every composition that conf/hydra/launcher/joblib.yaml shares the plugin's name
# (deliberately: see that file); once per job here would bury the plan.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema")
conf_dir, plan_file, steps = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
lines, sweep_dirs = [], set()
with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    for index, step in enumerate(steps, 1):
        try:  # the command line itself: secrets, unknown group options, malformed overrides
            check_secrets({}, shlex.split(step))
            overrides = parser.parse_overrides(shlex.split(step))
            hydra_args = [o.input_line for o in overrides if o.is_hydra_override()]
            task_args = [o.input_line for o in overrides if not o.is_hydra_override()]
            fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
            params = compose(config_name="config", overrides=fixed, return_hydra_config=True).hydra.sweeper.params or {}
            swept = parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + task_args)
            jobs = BasicSweeper.split_arguments(swept, max_batch_size=None)[0]
        except Exception as err:  # the step is echoed redacted: it may hold the very secret refused
            refuse(f"[multirun] bad config in sweep {index} ({' '.join(redact_overrides(shlex.split(step)))}):\n  {err}")
        for job in jobs:
            try:
                cfg = compose(config_name="config", overrides=job + hydra_args, return_hydra_config=True)
                HydraConfig.instance().set_config(cfg)  # resolves ${hydra:runtime.cwd} as in a real job
                check_choices(cfg.hydra.runtime.choices)
                check_launcher(OmegaConf.to_container(cfg.hydra.launcher, resolve=True),
                               {"hardware": OmegaConf.to_container(cfg.hardware, resolve=True)})
                with open_dict(cfg):
                    del cfg["hydra"]
                validate_config(cfg)
            except Exception as err:
                refuse(f"[multirun] bad config in sweep {index}, job {' '.join(redact_overrides(job))}:\n  {err}")
            run_id, digest = run_identity(redact_secrets(OmegaConf.to_container(cfg, resolve=True)))
            sweep_dir = Path(cfg.paths.runs_root) / cfg.sweep_id
            sweep_dirs.add(sweep_dir)
            lines.append(f"{records.run_dir(cfg.paths.runs_root, cfg.sweep_id, run_id)}\t{digest}\t{index}")
        print(f"[multirun]   sweep {index}/{len(steps)}: {step}  ->  {len(jobs)} jobs")
if len(sweep_dirs) != 1:
    sys.exit(f"[multirun] the jobs would write to {len(sweep_dirs)} sweep folders ({sorted(map(str, sweep_dirs))}); "
             "do not sweep sweep_id or paths.runs_root")
plan_file.write_text(f"{sweep_dirs.pop()}\n" + "".join(line + "\n" for line in lines))
PY
}

# count_runs PLAN_FILE SINCE_EPOCH MODE : reads the records of the planned runs. A run is done when its
# record is completed with the planned config hash (also from an earlier launch: it was skipped), or
# failed and written after SINCE_EPOCH. MODE progress: one line of counts; final: the counts and every
# run without a completed record, exit status 1 if there is any; failed: their number; table: one line
# per run with its status and objective metric (when there is no analysis report).
count_runs() {
  "$PYTHON" - "$@" <<'PY'
import json
import sys
from pathlib import Path

plan_file, since, mode = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
planned = {}  # run dir -> config hash (a run planned by two sweeps of a suite runs once)
for line in plan_file.read_text().splitlines()[1:]:
    run_dir, digest, _ = line.split("\t")
    planned[run_dir] = digest
status, records = {}, {}
for run_dir, digest in planned.items():
    path = Path(run_dir) / "record.json"
    try:
        record = records[run_dir] = json.loads(path.read_text())
    except (OSError, ValueError):  # not written yet (records are written atomically, never torn)
        status[run_dir] = "pending"
        continue
    if record.get("status") == "completed" and record.get("config_hash") == digest:
        status[run_dir] = "completed"
    elif record.get("status") == "failed" and path.stat().st_mtime >= since:
        status[run_dir] = "failed"
    else:  # a record from an earlier launch with another outcome: this launch redoes the run
        status[run_dir] = "pending"
counts = {kind: sum(1 for s in status.values() if s == kind) for kind in ("completed", "failed", "pending")}
if mode == "failed":
    print(counts["failed"] + counts["pending"])
elif mode == "table":
    for run_dir, kind in status.items():
        record = records.get(run_dir, {})
        objective = record.get("config", {}).get("objective", "gold_reward")
        value = record.get("metrics", {}).get(objective)
        shown = f"{objective}={value:.4g}" if isinstance(value, (int, float)) else ""
        print(f"  {Path(run_dir).name:<44} {kind:<10} {shown}")
else:
    done = counts["completed"] + counts["failed"]
    print(f"[multirun] {done}/{len(planned)} runs done: {counts['completed']} completed, {counts['failed']} failed")
if mode == "final":
    for run_dir, kind in status.items():
        if kind == "failed":
            error = (records[run_dir].get("error") or "no error message").splitlines()[0]
            print(f"[multirun]   failed: {run_dir}\n[multirun]     {error}")
        elif kind == "pending":
            print(f"[multirun]   no record: {run_dir} (the job died before writing one: see the Hydra log)")
    sys.exit(1 if counts["failed"] or counts["pending"] else 0)
PY
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
LIVE_LINES='^\[imi-bench\] (completed|failed|skipped|error)|^\[multirun\]|Launching|Error|error:'

# --- arguments --------------------------------------------------------------------------------------------

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
if ! SWEEPS="$(suite_sweeps "$PRESET")"; then
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
echo "[multirun] preset $PRESET, sweep id $SWEEP_ID: composing and validating every job..."
plan_sweeps "$PLAN" "${STEPS[@]}"
SWEEP_DIR="$(head -n 1 "$PLAN")"
N_JOBS="$(( $(wc -l < "$PLAN") - 1 ))"
N_RUNS="$(tail -n +2 "$PLAN" | cut -f1 | sort -u | wc -l)"
START="$(date +%s)"
echo "[multirun] $N_JOBS jobs in ${#STEPS[@]} sweep(s), $N_RUNS distinct runs; records go to $SWEEP_DIR/<run id>/"
count_runs "$PLAN" "$START" progress | sed 's/ done:/ already done:/'
echo "[multirun] launcher: ${LAUNCHER[*]:-as overridden}; re-running this command skips completed runs"
if (( DRY_RUN )); then
  tail -n +2 "$PLAN" | cut -f1,3 | sed 's/^/[multirun]   /; s/\t/   sweep /'
  exit 0
fi

# --- run ------------------------------------------------------------------------------------------------------

LOG_DIR="multirun/$SWEEP_ID/$(date +%Y-%m-%d_%H-%M-%S)"
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
elif "$PYTHON" -m analysis report --help > /dev/null 2>&1; then
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

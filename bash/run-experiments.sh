#!/usr/bin/env bash
# The paper's main table: every (data set, method) pair as one seed sweep,
#
#   python run.py -m experiment=<dataset>-<method> tag=paper seed='range(1,SEEDS+1)' [OVERRIDES...]
#
# so the runs land in logs/multiruns/paper/<dataset>-<method>/seed=<n>/ and
# `mchad-report logs/multiruns/paper --out report/` makes the table.
#
# Usage: bash/run-experiments.sh [SEEDS] [OVERRIDES...]
#   SEEDS      number of seeds, 1..SEEDS (default 6; also the env var SEEDS)
#   OVERRIDES  passed to every sweep, e.g. hydra/launcher=ray_local hydra.launcher.ray.remote.num_gpus=0.25;
#              they come last, so they win: tag=mine puts the runs under logs/multiruns/mine/
# Environment:
#   DATASETS   data sets to run (default: cifar10 cifar100 svhn)
#   METHODS    methods to run (default: the paper's mchad gmchad cac gcac center gcenter ii)
#   PYTHON     interpreter (default: .venv/bin/python when it exists, else python3)
#   DRY_RUN=1  print the commands, run nothing
#
# A sweep with failed runs does not stop the script: the next one starts, and the sweeps with
# failures are listed at the end (exit status 1). Running the script again skips the finished
# runs and resumes the killed ones. The sweeps run from the project root, whatever the current
# directory. The functions below are shared with run-ablation.sh, which sources this file.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
FAILED_SWEEPS=()
SWEEP_COUNT=0

# Print a command so that it can be pasted into a shell.
show() {
    local words=() arg
    for arg in "$@"; do
        if [[ "$arg" =~ ^[A-Za-z0-9_./=:,+@%-]*$ ]]; then words+=("$arg"); else words+=("'${arg//\'/\'\\\'\'}'"); fi
    done
    echo "+ ${words[*]}"
}

# sweep LABEL OVERRIDES...: one `run.py -m` sweep; a failing sweep is recorded, not fatal.
sweep() {
    local label=$1
    shift
    local command=("$PYTHON" run.py -m "$@")
    SWEEP_COUNT=$((SWEEP_COUNT + 1))
    show "${command[@]}"
    [[ "${DRY_RUN:-0}" == 1 ]] && return 0
    (cd "$ROOT" && "${command[@]}") || FAILED_SWEEPS+=("$label")
}

# The closing line; exit status 1 when any sweep had failures.
finish() {
    if [[ "${DRY_RUN:-0}" == 1 ]]; then
        echo "dry run: $SWEEP_COUNT sweeps"
    elif ((${#FAILED_SWEEPS[@]})); then
        echo "${#FAILED_SWEEPS[@]} of $SWEEP_COUNT sweeps had failures: ${FAILED_SWEEPS[*]}"
        echo "(each failed run has an error.txt in its directory; run the same command again to retry them)"
        return 1
    else
        echo "all $SWEEP_COUNT sweeps succeeded"
    fi
}

# read_seeds [SEEDS] ...: sets SEED_SWEEP, the Hydra sweep over seeds 1..SEEDS (a leading number,
# else the env var SEEDS, else 6), and SEED_ARGS, how many arguments that took (shift them).
read_seeds() {
    local seeds=${SEEDS:-6}
    SEED_ARGS=0
    if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
        seeds=$1
        SEED_ARGS=1
    fi
    [[ "$seeds" =~ ^[1-9][0-9]*$ ]] || { echo "SEEDS=$seeds is not a positive integer: pass e.g. SEEDS=6" >&2; exit 2; }
    SEED_SWEEP="seed=range(1,$((seeds + 1)))"
}

main() {
    read_seeds "$@"
    shift "$SEED_ARGS"
    local dataset method
    for dataset in ${DATASETS:-cifar10 cifar100 svhn}; do
        for method in ${METHODS:-mchad gmchad cac gcac center gcenter ii}; do
            sweep "$dataset-$method" "experiment=$dataset-$method" tag=paper "$SEED_SWEEP" "$@"
        done
    done
    finish
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi

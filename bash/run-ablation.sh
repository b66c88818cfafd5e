#!/usr/bin/env bash
# The MCHAD ablations on CIFAR-10, one seed sweep per variant, all with tag=ablation, so the runs
# land in logs/multiruns/ablation/<experiment>/<overrides>,seed=<n>. The base is G-MCHAD
# (cifar10-gmchad), the one configuration in which all three loss terms and the margin are active
# (in plain MCHAD weight_oe=0 switches the margin term off):
#
#   full           the base configuration (the reference point of every grid below)
#   no-center      method.weight_center=0   drops L_Lambda, the pull towards the class center
#   no-ce          method.weight_ce=0       drops L_Delta, the soft-min cross-entropy over centers
#   no-oe          method.weight_oe=0       drops L_Theta, the margin term on the outliers (the outlier
#                                           batch still passes through the network, as in the base)
#   margin         method.margin=1,2,8,16   around the paper's 4; reference form: m bounds the squared distance
#   radius         method.radius=0.5,1,2,4  around the paper's 0; compared with the squared distance
#
# Usage: bash/run-ablation.sh [SEEDS] [OVERRIDES...]
#   SEEDS (default 6; also the env var SEEDS), OVERRIDES passed to every sweep.
# Environment: EXPERIMENT (default cifar10-gmchad), PYTHON, DRY_RUN=1 (print the commands only).
# Report them all at once: the report averages the seeds of each variant (the overrides besides
# the seed) into its own row, e.g.
#   mchad-report logs/multiruns/ablation --out report/ablation
# A sweep with failures does not stop the script; they are listed at the end (exit status 1).
set -euo pipefail
# shellcheck source=run-experiments.sh
source "$(dirname "${BASH_SOURCE[0]}")/run-experiments.sh"

ABLATIONS=(
    "full|"
    "no-center|method.weight_center=0"
    "no-ce|method.weight_ce=0"
    "no-oe|method.weight_oe=0"
    "margin|method.margin=1,2,8,16"
    "radius|method.radius=0.5,1,2,4"
)

main_ablation() {
    read_seeds "$@"
    shift "$SEED_ARGS"
    local experiment=${EXPERIMENT:-cifar10-gmchad} entry label override
    for entry in "${ABLATIONS[@]}"; do
        label=${entry%%|*}
        override=${entry#*|}
        sweep "$label" "experiment=$experiment" tag=ablation ${override:+"$override"} "$SEED_SWEEP" "$@"
    done
    finish
}

main_ablation "$@"

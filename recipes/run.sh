#!/usr/bin/env bash
# Launch a recipe: bash recipes/run.sh [--dry-run] <recipe> [hydra overrides...]
#
#   <recipe>      a YAML file in recipes/ (sciworld_ppo_epo, alfworld_grpo, ...; see recipes/README.md)
#   overrides     Hydra overrides, e.g. recipe.model=/models/Qwen2.5-7B-Instruct recipe.seed=2
#                 trainer.logger=[console,wandb] trainer.n_gpus_per_node=4 ablation=no_beta
#   --dry-run     compose and check the recipe (verl's validate_config + the epo: section), print
#                 the resolved config and exit; nothing is built or launched
#
# Environment: PYTHON (default: the repository's .venv, else python3), VERL_EPO_ROOT (where data/
# and runs/ go; default <repo>/outputs).
set -euo pipefail

usage() {
    sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RECIPES="$REPO/recipes"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi

DRY_RUN=0
ARGS=()
for arg in "$@"; do
    case "$arg" in
        --dry-run|-n) DRY_RUN=1 ;;
        -h|--help) usage 0 ;;
        *) ARGS+=("$arg") ;;
    esac
done
[[ ${#ARGS[@]} -ge 1 ]] || { echo "error: name a recipe" >&2; usage 2; }
RECIPE="$(basename "${ARGS[0]}" .yaml)"
USER_OVERRIDES=("${ARGS[@]:1}")
if [[ ! -f "$RECIPES/$RECIPE.yaml" ]]; then
    echo "error: no recipe '$RECIPE' in $RECIPES; available:" >&2
    (cd "$RECIPES" && ls *.yaml | sed 's/\.yaml$//; s/^/  /') >&2
    exit 2
fi

# an absolute root, so every Ray worker (and every node) writes to the same place; an ablation
# gets its own experiment name (and output folder) unless the user names one; several ablations
# at once (ablation=[rloo,gspo]) are named rloo+gspo
ROOT="${VERL_EPO_ROOT:-$REPO/outputs}"
DEFAULTS=("++recipe.root=$ROOT")
for arg in "${USER_OVERRIDES[@]+"${USER_OVERRIDES[@]}"}"; do
    case "$arg" in
        ablation=*|+ablation=*)
            name="${arg#*=}"; name="${name#[}"; name="${name%]}"; name="${name//,/+}"
            DEFAULTS+=("trainer.experiment_name=${RECIPE}_${name}_seed\${recipe.seed}") ;;
    esac
done
OVERRIDES=("${DEFAULTS[@]}" "${USER_OVERRIDES[@]+"${USER_OVERRIDES[@]}"}")

export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if [[ $DRY_RUN -eq 1 ]]; then
    exec "$PYTHON" "$RECIPES/compose.py" --print "$RECIPE" "${OVERRIDES[@]}"
fi

# compose + check before anything is built or started; defines RECIPE_* variables
SHELL_VARS="$("$PYTHON" "$RECIPES/compose.py" --shell "$RECIPE" "${OVERRIDES[@]}")"
eval "$SHELL_VARS"

build_set() {  # build_set <split: train|val> <task set> <parquet file>
    if [[ -z "$2" ]]; then
        echo "[run.sh] $1 data: $3 (the recipe names no task set; not built)"
    elif [[ -f "$3" ]]; then
        echo "[run.sh] $1 data: $3 (exists)"
    else
        echo "[run.sh] $1 data: building $2 -> $3"
        "$PYTHON" -m env_adapters.dataset "--$1-set" "$2" --out "$(dirname "$3")"
    fi
}
build_set train "$RECIPE_TRAIN_SET" "$RECIPE_TRAIN_FILE"
build_set val "$RECIPE_VAL_SET" "$RECIPE_VAL_FILE"

mkdir -p "$RECIPE_OUTPUT_DIR"
LOG="$RECIPE_OUTPUT_DIR/train.log"
# verl's file logger (what verl-epo-report reads) always writes into the run folder; it truncates
# its file at start, so a resumed run logs to a new metrics.<time>.jsonl beside the first one
METRICS="$RECIPE_OUTPUT_DIR/metrics.jsonl"
[[ -e "$METRICS" ]] && METRICS="$RECIPE_OUTPUT_DIR/metrics.$(date +%Y%m%d-%H%M%S).jsonl"
case ",$RECIPE_LOGGER," in
    *,file,*) LOGGERS="$RECIPE_LOGGER" ;;
    *) LOGGERS="$RECIPE_LOGGER,file" ;;
esac
# set through Ray's runtime env, so the trainer sees it on whichever node it runs
OVERRIDES+=("trainer.logger=[$LOGGERS]" "++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH='$METRICS'")
export VERL_FILE_LOGGER_PATH="$METRICS"
export TENSORBOARD_DIR="${TENSORBOARD_DIR:-$RECIPE_OUTPUT_DIR/tensorboard}"
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-true}"
export HYDRA_FULL_ERROR=1
cat <<EOF
[run.sh] recipe       $RECIPES/$RECIPE.yaml
[run.sh] experiment   $RECIPE_EXPERIMENT ($RECIPE_N_GPUS GPUs, logger: $LOGGERS)
[run.sh] log          $LOG
[run.sh] metrics      $METRICS (verl's file logger; verl-epo-report $RECIPE_OUTPUT_DIR)
[run.sh] checkpoints  $RECIPE_CHECKPOINT_DIR
[run.sh] validation   $RECIPE_OUTPUT_DIR/validation (generations of each validation)
[run.sh] tensorboard  $TENSORBOARD_DIR (when trainer.logger includes tensorboard)
[run.sh] final eval   on ${RECIPE_TEST_SETS:-(none)}: see recipes/README.md, "Final evaluation"
EOF
set -x
"$PYTHON" -m verl.trainer.main_ppo --config-path "$RECIPES" --config-name "$RECIPE" \
    "hydra.run.dir=$RECIPE_OUTPUT_DIR/hydra" "${OVERRIDES[@]}" 2>&1 | tee -a "$LOG"

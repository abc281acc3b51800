"""Compose a recipe the way ``python -m verl.trainer.main_ppo`` does, and check it before a launch.

``python recipes/compose.py RECIPE [hydra overrides...]`` composes ``recipes/RECIPE.yaml`` on top
of verl's ``ppo_trainer`` defaults (Hydra, with this folder as the config path), then checks it:

1. the recipe's own consistency (batch sizes against GPU counts, token limits, task set names,
   the ``env:`` section), each error naming the key to change;
2. verl's ``validate_config`` (the check ``main_ppo`` runs before starting Ray);
3. the ``epo:`` section with ``verl_epo.trainer.load_epo_config`` when ``trainer_mode=epo``.

Options: ``--print`` prints the resolved config as YAML and the update count of a typical step
(``run.sh --dry-run``); ``--shell`` also checks the model folders and the data files ``run.sh``
does not build (``verl_epo/preflight.py``), then prints ``NAME=value`` lines for ``run.sh`` (task
sets, data and output folders). Exit status 2
and a one-line reason on stderr when the recipe is rejected.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from recipe_checks import RecipeError, check_recipe

RECIPES_DIR = Path(__file__).resolve().parent


def recipe_names(include_cpu: bool = True) -> list[str]:
    """Every launchable RL recipe: the YAML files directly in ``recipes/`` built on verl's
    ``ppo_trainer`` (an SFT recipe, built on another verl config, is not one)."""
    names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml") if _extends_ppo_trainer(p))
    return names if include_cpu else [n for n in names if not n.startswith("cpu_")]


def _extends_ppo_trainer(path: Path) -> bool:
    import yaml

    defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults") or []
    return "ppo_trainer" in defaults


# the CPU twins of the GPU recipes are cpu_<recipe>.yaml, except these two older names (make demo's)
_TWIN_NAMES = {"cpu_sciworld": "sciworld_grpo_epo", "cpu_alfworld": "alfworld_grpo_epo"}


def gpu_twin(cpu: str) -> str | None:
    """The GPU recipe a CPU recipe is the twin of (None: cpu_synthetic, the demo's, has none)."""
    name = _TWIN_NAMES.get(cpu, cpu.removeprefix("cpu_"))
    return name if name != cpu and name in recipe_names(include_cpu=False) else None


def recipe_name(name: str) -> str:
    """``sciworld_ppo_epo``, ``sciworld_ppo_epo.yaml`` or ``recipes/sciworld_ppo_epo.yaml`` -> stem."""
    stem = Path(name).name.removesuffix(".yaml")
    if stem not in recipe_names():
        raise RecipeError(f"unknown recipe {name!r}; available: {', '.join(recipe_names())}")
    return stem


def compose_recipe(name: str, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The recipe's config as Hydra composes it for ``main_ppo --config-path recipes/``."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(RECIPES_DIR), version_base=None):
        return compose(config_name=recipe_name(name), overrides=list(overrides))


def update_plan(config: Any, epo: Any) -> list[str]:
    """What a typical step's update schedule is: optimizer updates at a few episode lengths.

    A step has ``train_batch_size x rollout.n`` episodes of one row per turn; episodes run to
    ``env.max_turns`` while they fail (most of them early in training) and stop sooner when won.
    """
    n, tasks = int(config.actor_rollout_ref.rollout.n), int(config.data.train_batch_size)
    episodes = tasks * n
    max_turns = int((config.get("env") or {}).get("max_turns", 1))
    mini_rows = int(config.actor_rollout_ref.actor.ppo_mini_batch_size) * n
    if epo is not None and epo.rows_per_update is not None:
        rule = f"epo.rows_per_update={epo.rows_per_update}: ceil(turn rows / {epo.rows_per_update})"
    elif epo is not None and epo.updates_per_step is not None:
        rule = f"epo.updates_per_step={epo.updates_per_step}: a fixed count"
    else:
        rule = f"verl's split: ceil(turn rows / ppo_mini_batch_size x rollout.n = {mini_rows})"
    lines = [f"updates per step ({rule}), {tasks} tasks x {n} episodes:"]
    for turns in sorted({max_turns, max(1, max_turns // 2), max(1, max_turns // 5)}, reverse=True):
        rows = episodes * turns
        updates = epo.updates_for(rows) if epo is not None else None
        if updates is None:
            updates = math.ceil(rows / mini_rows)
        plural = "s" if updates > 1 else ""
        lines.append(f"  {turns:3d} turns per episode: {rows:6d} turn rows -> {updates} optimizer update{plural} "
                     f"of ~{math.ceil(rows / updates)} rows")
    return lines


def check_launch_files(config: Any) -> None:
    """Before a launch: the model folders exist (or are Hugging Face ids), and so do the data files
    ``run.sh`` will not build (a split whose ``recipe.*_set`` is not named)."""
    from verl_epo.preflight import check_data_files, check_model_paths

    check_model_paths(config)
    section = config.get("recipe") or {}
    unbuilt = tuple(key for key, name in (("train_files", "train_set"), ("val_files", "val_set"))
                    if not section.get(name))
    check_data_files(config, unbuilt)


def shell_lines(config: Any) -> list[str]:
    """``NAME=value`` lines (shell-quoted) that ``run.sh`` evaluates.

    A recipe without a ``recipe:`` section (e.g. a CPU recipe) gets empty task sets, so run.sh
    builds nothing and uses the ``data.*_files`` given as overrides.
    """
    section = config.get("recipe") or {}
    root = section.get("root", "outputs")
    values = {
        "TRAIN_SET": section.get("train_set", ""),
        "VAL_SET": section.get("val_set", ""),
        "TEST_SETS": " ".join(section.get("test_sets") or []),
        "OUTPUT_DIR": section.get("output_dir", f"{root}/runs/{config.trainer.experiment_name}"),
        "TRAIN_FILE": config.data.train_files,
        "VAL_FILE": config.data.val_files,
        "CHECKPOINT_DIR": config.trainer.default_local_dir,
        "EXPERIMENT": config.trainer.experiment_name,
        "LOGGER": ",".join(config.trainer.logger),
        "N_GPUS": int(config.trainer.n_gpus_per_node) * int(config.trainer.nnodes),
    }
    return [f"RECIPE_{key}={shlex.quote(str(value))}" for key, value in values.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", help="recipe name (a YAML file in recipes/)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. trainer.n_gpus_per_node=4")
    parser.add_argument("--print", action="store_true", help="print the resolved config as YAML")
    parser.add_argument("--shell", action="store_true", help="print NAME=value lines for run.sh")
    parser.add_argument("--stand-in-model", default=None,
                        help="local model folder used instead of the recipe's for verl's critic check")
    args = parser.parse_args(argv)

    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        # verl and Hydra print progress to stdout; keep stdout for the config / NAME=value lines
        with contextlib.redirect_stdout(sys.stderr):
            config = compose_recipe(args.recipe, args.overrides)
            if args.shell:
                check_launch_files(config)
            epo = check_recipe(config, args.stand_in_model, warn_missing_model=True)
            resolved = OmegaConf.to_container(config, resolve=True)
    except (RecipeError, ValueError, OmegaConfBaseException) as err:
        print(f"recipe {args.recipe} rejected: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # Hydra's own errors (unknown key, missing config group option)
        if type(err).__module__.startswith("hydra"):
            print(f"recipe {args.recipe} rejected: {err}", file=sys.stderr)
            return 2
        raise
    if args.print:
        print(OmegaConf.to_yaml(resolved), end="")
        state = "on" if epo is not None and epo.enable else "off"
        for line in update_plan(config, epo):
            print(f"# {line}")
        print(f"# recipe {args.recipe}: checks passed (verl validate_config, EPO {state})", flush=True)
    if args.shell:
        print("\n".join(shell_lines(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

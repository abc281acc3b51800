"""Checks that stop a bad launch within seconds, in the driver, before Ray starts.

verl reads the model folder and the data files only inside its TaskRunner, after ``ray.init``
(40-140 s on a loaded machine, minutes on a cluster), and reports a missing model folder as a
malformed Hugging Face repo id. ``preflight`` checks them first, with messages that name the key,
the problem and the fix, together with the ``epo:`` section and every registered config check
(the agent loop's ``env:`` section).

Hooked into ``python -m verl.trainer.main_ppo`` through Hydra's own callback mechanism: a recipe
lists ``hydra.callbacks.epo_preflight._target_: verl_epo.preflight.PreflightCallback`` (the GPU
recipes do, in ``recipes/base/common.yaml``) and Hydra runs it before verl's ``main``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class PreflightError(ValueError):
    """A launch would fail later; the message names the key and the fix."""


def _is_remote(path: str) -> bool:
    return "://" in path


def check_model_path(key: str, path: str | None) -> None:
    """``path`` is a local model folder with a ``config.json``, or a Hugging Face id (cached, when
    the hub is offline)."""
    if path is None or _is_remote(str(path)):
        return
    path = str(path)
    local = Path(path).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise PreflightError(f"{key}={path}: the folder has no config.json, so it is not a Hugging Face "
                                 "model folder; point it at the folder that holds config.json and the weights")
        return
    if local.exists():
        raise PreflightError(f"{key}={path} is a file; it must be a model folder or a Hugging Face id")
    if not _HF_ID.match(path) or path.startswith((".", "~")):
        raise PreflightError(f"{key}={path}: no such folder (and not a Hugging Face id like "
                             "Qwen/Qwen2.5-7B-Instruct); fix the path or download the model there")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(path, "config.json"), str):
            raise PreflightError(f"{key}={path}: HF_HUB_OFFLINE is set and the model is not in the Hugging Face "
                                 "cache; download it first or give a local folder")


def _files(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def check_data_files(config: Any, keys: tuple[str, ...] = ("train_files", "val_files")) -> None:
    """Every local ``data.<key>`` file exists."""
    for key in keys:
        for path in _files(config.data.get(key)):
            if not _is_remote(path) and not Path(path).expanduser().is_file():
                raise PreflightError(
                    f"data.{key}: no such file {path}; build the task set's parquet files with "
                    "`python -m env_adapters.dataset --train-set <set> --val-set <set> --out <dir>` "
                    "(recipes/run.sh builds a recipe's own sets) or fix the path")


def check_model_paths(config: Any) -> None:
    """The actor's model and tokenizer, and the critic's when it trains."""
    model = config.actor_rollout_ref.model
    check_model_path("actor_rollout_ref.model.path", model.get("path"))
    if model.get("tokenizer_path") not in (None, model.get("path")):
        check_model_path("actor_rollout_ref.model.tokenizer_path", model.get("tokenizer_path"))
    from verl.trainer.ppo.utils import need_critic

    if need_critic(config):
        critic_model = config.critic.get("model") or {}
        if critic_model.get("path") not in (None, model.get("path")):
            check_model_path("critic.model.path", critic_model.get("path"))


def preflight(config: Any, data_files: bool = True) -> None:
    """Every check that can run without Ray: ``epo:`` and registered config checks (when the EPO
    trainer is selected), model folders, and (``data_files``) the data files."""
    if config.trainer.get("v1", {}).get("trainer_mode") == "epo":
        from verl_epo.trainer import load_epo_config

        load_epo_config(config)
    check_model_paths(config)
    if data_files:
        check_data_files(config)


class PreflightCallback(Callback):
    """Hydra callback: ``preflight`` on the composed job config before verl's ``main`` runs.

    Hydra turns an exception raised by a callback into a warning and carries on, so a failed check
    prints its error line and exits (status 2) instead.
    """

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        job = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        try:
            preflight(job)
        except (ValueError, TypeError) as err:  # PreflightError, EPOConfigError, an env: check
            print(f"{type(err).__module__}.{type(err).__name__}: {err}", file=sys.stderr)
            print("[verl-epo] launch stopped before Ray started (verl_epo/preflight.py)", file=sys.stderr, flush=True)
            raise SystemExit(2) from err

"""The model to evaluate: a Hugging Face directory, or one merged once from a verl checkpoint."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))


def find_actor_dir(path: Path) -> Path | None:
    """The ``actor`` folder of a verl checkpoint at ``path`` (root, ``global_step_N`` or ``actor``)."""
    if (path / "latest_checkpointed_iteration.txt").is_file():
        step = (path / "latest_checkpointed_iteration.txt").read_text().strip()
        path = path / f"global_step_{step}"
    if (path / "actor").is_dir():
        path = path / "actor"
    if path.name == "huggingface" and (path.parent / "fsdp_config.json").is_file():
        path = path.parent
    return path if (path / "fsdp_config.json").is_file() else None


def merge_fsdp_checkpoint(actor_dir: Path, target: Path) -> Path:
    """Merge verl's FSDP shards into a Hugging Face model directory at ``target``.

    verl's FSDP checkpoint manager saves ``model_world_size_W_rank_R.pt`` (one state dict per rank;
    FSDP2 parameters are DTensors sharded on one dimension) and ``huggingface/`` (config, tokenizer,
    generation config; weights only when ``checkpoint.save_contents`` includes ``hf_model``). The
    shards are concatenated in rank order along their shard dimension and cast to the config's dtype
    (fp32 for the tiny CPU models, whose fp32 weights are then kept exactly; verl's own
    ``python -m verl.model_merger`` always writes bf16). LoRA and tensor-parallel checkpoints are
    not handled here: use verl's merger for those.
    """
    import torch
    from torch.distributed.tensor import DTensor
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_dir = actor_dir / "huggingface"
    world = int(json.loads((actor_dir / "fsdp_config.json").read_text())["world_size"])
    if (actor_dir / "lora_train_meta.json").exists():
        raise ValueError(f"{actor_dir} is a LoRA checkpoint; merge it with `python -m verl.model_merger merge "
                         f"--backend fsdp --local_dir {actor_dir} --target_dir DIR` and evaluate DIR")
    paths = [actor_dir / f"model_world_size_{world}_rank_{rank}.pt" for rank in range(world)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing or not (hf_dir / "config.json").is_file():
        raise FileNotFoundError(f"{actor_dir} is not a complete verl FSDP checkpoint: missing "
                                f"{missing or ['huggingface/config.json']}")
    shards = [torch.load(p, map_location="cpu", weights_only=False) for p in paths]
    state: dict[str, Any] = {}
    for key, first in shards[0].items():
        if not isinstance(first, DTensor):
            state[key] = first
            continue
        if len(first.placements) != 1:
            raise ValueError(f"{key}: {len(first.placements)}-D device mesh (HSDP/TP) is not handled here; "
                             "use `python -m verl.model_merger merge --backend fsdp ...`")
        placement = first.placements[0]
        local = [shard[key]._local_tensor for shard in shards]
        state[key] = torch.cat(local, dim=placement.dim) if placement.is_shard() else local[0]
    config = AutoConfig.from_pretrained(hf_dir, local_files_only=True)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(hf_dir, partial)
    model.save_pretrained(partial)
    (partial / "merged_from.json").write_text(json.dumps({"checkpoint": str(actor_dir.resolve())}) + "\n")
    # rename last: a killed merge never leaves a directory that looks complete
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def resolve_model(path: str | Path, out: Path) -> Path:
    """A Hugging Face model directory for ``path`` (merging a verl checkpoint into ``out`` if needed)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model {path} does not exist; pass a Hugging Face model directory or a verl "
                                "checkpoint folder (global_step_N)")
    if (path / "config.json").is_file() and _has_weights(path):
        return path
    actor = find_actor_dir(path)
    if actor is None:
        raise FileNotFoundError(f"{path} is neither a Hugging Face model directory (config.json + weights) nor "
                                "a verl checkpoint (global_step_N/actor/fsdp_config.json)")
    if _has_weights(actor / "huggingface"):
        return actor / "huggingface"
    target = out / "hf_model" / actor.parent.name
    if (target / "config.json").is_file() and _has_weights(target):
        return target
    print(f"[eval] merging FSDP checkpoint {actor} -> {target}", file=sys.stderr, flush=True)
    return merge_fsdp_checkpoint(actor, target)


# --- policies ------------------------------------------------------------------------------------

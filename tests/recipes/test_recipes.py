"""Every GPU recipe composes through verl's config loading and passes verl's and EPO's checks.

Each RL recipe (``recipes/*.yaml`` on verl's ``ppo_trainer``, except the CPU ones) is composed
with Hydra exactly as ``python -m verl.trainer.main_ppo --config-path recipes --config-name
<recipe>`` composes it, then
checked by verl's ``validate_config``, ``verl_epo.trainer.load_epo_config`` and the recipe's own
batch / token / task-set rules (``recipes/compose.py``); the resolved values the paper fixes are
compared with EPO_SPEC. verl's critic check reads the model's config and tokenizer: a tiny local
model stands in for the real one (no network here), every other value is the recipe's own.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
README = RECIPES / "README.md"


def _load_compose():
    sys.path.insert(0, str(RECIPES))  # compose.py imports recipe_checks beside it
    spec = importlib.util.spec_from_file_location("recipes_compose", RECIPES / "compose.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


compose = _load_compose()

GPU_RECIPES = compose.recipe_names(include_cpu=False)
ABLATIONS = sorted(p.stem for p in (RECIPES / "ablation").glob("*.yaml"))

# EPO_SPEC "Paper defaults"
GAMES = {
    "sciworld": dict(model="Qwen/Qwen2.5-7B-Instruct", steps=125, turns=30, alpha=0.05,
                     train="sciworld/l0-train", val="sciworld/l0-test-small",
                     test=["sciworld/l0-test", "sciworld/l1-test"]),
    "alfworld": dict(model="Qwen/Qwen2.5-3B-Instruct", steps=150, turns=50, alpha=0.1,
                     train="alfworld/train", val="alfworld/valid-seen-small",
                     test=["alfworld/valid-seen", "alfworld/valid-unseen"]),
}
# the paper's turn rows per optimizer update (ppo_mini_batch_size x n of its code); ALFWorld GRPO:
# the authors' launcher default (256 x 8), the same as their ALFWorld PPO
ROWS_PER_UPDATE = {("sciworld", "ppo"): 512, ("sciworld", "grpo"): 1024, ("alfworld", "ppo"): 2048,
                   ("alfworld", "grpo"): 2048}
LR = {("sciworld", "ppo"): 3e-6, ("sciworld", "grpo"): 5e-6, ("alfworld", "ppo"): 5e-6,
      ("alfworld", "grpo"): 5e-6}
# recipes beyond the paper's eight: what differs from their base recipe
VARIANTS = {
    "sciworld_grpo_epo_lora": dict(lr=5e-5, lora_rank=64),
    "sciworld_grpo_epo_qwen3_8b": dict(model="Qwen/Qwen3-8B", thinking=False),
    "alfworld_grpo_epo_qwen3_4b": dict(model="Qwen/Qwen3-4B", thinking=False),
}
# ablation -> EPO fields it must set (dotted paths inside epo:)
ABLATION_EFFECTS = {
    "entropy_only": {"enable": True, "use_entropy_term": True, "use_smoothing": False},
    "no_beta": {"use_phase_weight": False},
    "ref_window": {"reference.mode": "window", "reference.window": 10},
    "ref_ema": {"reference.mode": "ema", "reference.decay": 0.9},
    "ref_per_turn": {"reference.per_turn": True, "reference.mode": "cumulative"},
    "kappa_narrow": {"kappa_low": 0.5, "kappa_high": 1.5},
    "kappa_wide": {"kappa_low": 0.0, "kappa_high": 3.0},
    "band_hold": {"band_mode": "hold"},
}
# verl's own entropy controls, baselines beside EPO: EPO off, then the verl setting they change
VERL_CONTROLS = {
    "clip_cov": ("actor_rollout_ref.actor.policy_loss.loss_mode", "clip_cov"),
    "kl_cov": ("actor_rollout_ref.actor.policy_loss.loss_mode", "kl_cov"),
    "entropy_bonus": ("actor_rollout_ref.actor.entropy_coeff", 0.001),
}
# estimator / policy-loss variants with EPO as the recipe has it: ablation -> the verl settings it makes
ESTIMATORS = {
    "rloo": {"algorithm.adv_estimator": "rloo"},
    "reinforce_plus_plus": {"algorithm.adv_estimator": "reinforce_plus_plus"},
    "gspo": {"actor_rollout_ref.actor.policy_loss.loss_mode": "gspo",
             "actor_rollout_ref.actor.loss_agg_mode": "seq-mean-token-mean"},
    "dr_grpo": {"algorithm.norm_adv_by_std_in_grpo": False,
                "actor_rollout_ref.actor.loss_agg_mode": "seq-mean-token-sum-norm"},
}


def parse_name(name: str) -> tuple[str, str, bool, str]:
    """``<game>_<method>[_epo][_<variant>]`` -> (game, method, epo on, base recipe name)."""
    match = re.fullmatch(r"(sciworld|alfworld)_(ppo|grpo)(_epo)?(_.+)?", name)
    assert match, f"recipe {name}: name it <sciworld|alfworld>_<ppo|grpo>[_epo][_variant]"
    game, method, epo, variant = match.groups()
    if variant:
        assert name in VARIANTS, f"recipe {name}: add its expected values to VARIANTS in this test"
    return game, method, bool(epo), f"{game}_{method}{epo or ''}"


@pytest.fixture(scope="session")
def stand_in_model(tmp_path_factory) -> str:
    """A tiny local model folder (config + tokenizer) for verl's critic check."""
    from verl_epo.embedded.tiny_model import build_tiny_model

    folder = tmp_path_factory.mktemp("stand_in")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(["look around", "open door to kitchen", "take apple"] * 30))
    build_tiny_model([corpus], folder / "model", vocab_size=300)
    return str(folder / "model")


_composed: dict[tuple[str, tuple[str, ...]], object] = {}


def composed(name: str, *overrides: str):
    """Compose once per (recipe, overrides) in this session."""
    key = (name, overrides)
    if key not in _composed:
        _composed[key] = compose.compose_recipe(name, list(overrides))
    return _composed[key]


def test_paper_recipes_exist():
    paper = {f"{g}_{m}{e}" for g in GAMES for m in ("ppo", "grpo") for e in ("", "_epo")}
    assert paper <= set(GPU_RECIPES), f"missing: {sorted(paper - set(GPU_RECIPES))}"
    assert set(VARIANTS) <= set(GPU_RECIPES)
    assert set(ABLATIONS) == set(ABLATION_EFFECTS) | set(VERL_CONTROLS) | set(ESTIMATORS), (
        "every ablation file needs its expected effect")


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_recipe(name, stand_in_model):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy

    from env_adapters.agent_loop import env_settings

    game, method, epo_on, _ = parse_name(name)
    paper, variant = GAMES[game], VARIANTS.get(name, {})
    config = composed(name)
    epo = compose.check_recipe(config, stand_in_model=stand_in_model)

    arr = config.actor_rollout_ref
    actor, rollout, trainer = arr.actor, arr.rollout, config.trainer
    # algorithm
    assert trainer.use_v1 and trainer.v1.trainer_mode == "epo"
    assert config.algorithm.adv_estimator == ("gae" if method == "ppo" else "grpo")
    assert need_critic(config) is (method == "ppo") and bool(config.critic.enable) is (method == "ppo")
    assert actor.use_kl_loss is (method == "grpo") and need_reference_policy(config) is (method == "grpo")
    assert not config.algorithm.use_kl_in_reward
    if method == "grpo":
        assert actor.kl_loss_coef == 0.001 and actor.kl_loss_type == "low_var_kl"
    # EPO switches and numbers
    assert epo.enable is epo_on and config.epo.enable is epo_on
    assert (epo.entropy_coef, epo.kappa_low, epo.kappa_high, epo.gamma) == (0.001, 0.0, 2.0, 3.0)
    assert epo.alpha == paper["alpha"]
    assert epo.use_entropy_term and epo.use_smoothing and epo.use_phase_weight
    assert epo.reference.mode == "cumulative" and not epo.reference.per_turn
    assert epo.band_mode == "paper" and config.epo.band_mode == "paper"  # Eq. 6 exactly, and shown
    assert epo.total_steps is None  # β_k follows trainer.total_training_steps
    assert actor.entropy_coeff == 0
    assert (epo.rows_per_update, epo.updates_per_step) == (ROWS_PER_UPDATE[game, method], None)
    # model
    model = variant.get("model", paper["model"])
    assert arr.model.path == model and config.critic.model.path == model
    assert int(arr.model.get("lora_rank", 0)) == variant.get("lora_rank", 0)
    if "thinking" in variant:
        assert config.data.apply_chat_template_kwargs.enable_thinking is variant["thinking"]
    # optimizer: lr, cosine, 10% warm-up, min ratio 0.2
    optims = [actor.optim] + ([config.critic.optim] if method == "ppo" else [])
    assert actor.optim.lr == variant.get("lr", LR[game, method])
    for optim in optims:
        assert optim.lr_scheduler_type == "cosine"
        assert optim.lr_warmup_steps_ratio == 0.1 and optim.min_lr_ratio == 0.2
    # steps (enough epochs that the step count, not the epoch count, ends the run)
    assert trainer.total_training_steps == paper["steps"]
    assert trainer.total_epochs * max(1, 200 // 16) >= paper["steps"]
    # batches: 16 tasks x group of 8, consistent with mini/micro-batches and 8 GPUs
    n_gpus = trainer.n_gpus_per_node * trainer.nnodes
    assert (trainer.n_gpus_per_node, trainer.nnodes) == (8, 1)
    assert config.data.train_batch_size == 16 and rollout.n == 8
    assert config.data.train_batch_size * rollout.n % n_gpus == 0
    assert config.data.train_batch_size % actor.ppo_mini_batch_size == 0
    assert actor.ppo_mini_batch_size * rollout.n % n_gpus == 0
    assert actor.ppo_mini_batch_size * rollout.n // n_gpus % actor.ppo_micro_batch_size_per_gpu == 0
    if method == "ppo":
        assert config.critic.ppo_mini_batch_size * rollout.n % n_gpus == 0
        assert config.critic.strategy == "fsdp"
    assert actor.strategy == "fsdp"
    # rollout and per-turn token limits
    assert rollout.name == "vllm" and rollout.mode == "async"
    assert n_gpus % rollout.tensor_model_parallel_size == 0
    # docs/prompt_lengths.md: 3.0x the longest measured prompt (1,010 real Qwen tokens)
    assert (rollout.prompt_length, rollout.response_length) == (3072, 512)
    assert rollout.max_model_len >= rollout.prompt_length + rollout.response_length
    assert rollout.agent.default_agent_loop == "text_game"
    assert rollout.val_kwargs.do_sample is False and rollout.val_kwargs.n == 1
    # game settings and task sets
    settings, _ = env_settings(config)
    assert settings.max_turns == paper["turns"]
    assert (settings.success_reward, settings.invalid_penalty) == (10.0, 0.1)
    assert game in config.env.games
    assert (config.recipe.train_set, config.recipe.val_set) == (paper["train"], paper["val"])
    assert list(config.recipe.test_sets) == paper["test"]
    assert config.data.train_files.endswith(f"{paper['train']}/train.parquet")
    assert config.data.val_files.endswith(f"{paper['val']}/val.parquet")
    # validation and checkpoints
    assert trainer.val_before_train and trainer.test_freq > 0 and trainer.save_freq > 0
    assert paper["steps"] % trainer.save_freq == 0
    assert trainer.default_local_dir.startswith(config.recipe.output_dir)
    assert name in trainer.experiment_name


def test_one_seed_reaches_every_seed_setting():
    config = composed("alfworld_ppo_epo", "recipe.seed=7", "recipe.root=/data/epo")
    arr = config.actor_rollout_ref
    seeds = [config.data.seed, arr.actor.data_loader_seed, arr.actor.fsdp_config.seed,
             arr.rollout.seed, config.critic.data_loader_seed, config.critic.fsdp.seed]
    assert seeds == [7] * len(seeds)
    assert config.trainer.experiment_name == "alfworld_ppo_epo_seed7"
    assert config.trainer.default_local_dir == "/data/epo/runs/alfworld_ppo_epo_seed7/checkpoints"
    assert config.data.train_files == "/data/epo/data/alfworld/train/train.parquet"


def _field(epo, path: str):
    for part in path.split("."):
        epo = getattr(epo, part)
    return epo


@pytest.mark.parametrize("ablation", sorted(ABLATION_EFFECTS))
def test_ablation(ablation, stand_in_model):
    # alternate games and methods so the ablations compose with every EPO recipe
    index = sorted(ABLATION_EFFECTS).index(ablation)
    name = ["sciworld_ppo_epo", "alfworld_grpo_epo", "sciworld_grpo_epo", "alfworld_ppo_epo"][index % 4]
    epo = compose.check_recipe(composed(name, f"ablation={ablation}"), stand_in_model=stand_in_model)
    paper = compose.check_recipe(composed(name), stand_in_model=stand_in_model)
    for path, expected in ABLATION_EFFECTS[ablation].items():
        value = _field(epo, path)
        assert value == expected, f"ablation={ablation}: epo.{path}={value!r}, expected {expected!r}"
    assert any(_field(epo, p) != _field(paper, p) for p in ABLATION_EFFECTS[ablation]), (
        f"ablation={ablation} changes nothing on {name}"
    )
    untouched = {"alpha", "entropy_coef", "gamma"} - set(ABLATION_EFFECTS[ablation])
    assert all(getattr(epo, k) == getattr(paper, k) for k in untouched)


@pytest.mark.parametrize("ablation", sorted(ESTIMATORS))
def test_estimator_variant_keeps_epo(ablation, stand_in_model):
    """RLOO, REINFORCE++, GSPO and Dr. GRPO change only their verl settings: EPO stays exactly as
    the recipe has it, and check_recipe accepts the result."""
    for name in ("sciworld_grpo_epo", "alfworld_grpo_epo"):
        config, plain = composed(name, f"ablation={ablation}"), composed(name)
        epo = compose.check_recipe(config, stand_in_model=stand_in_model)
        assert epo == compose.check_recipe(plain, stand_in_model=stand_in_model)
        for key, value in ESTIMATORS[ablation].items():
            assert OmegaConf.select(config, key) == value != OmegaConf.select(plain, key), key


@pytest.mark.parametrize("ablation", sorted(VERL_CONTROLS))
def test_verl_entropy_control_baseline(ablation, stand_in_model):
    """verl's Clip-Cov, KL-Cov and entropy bonus switch EPO off (on an EPO recipe too) and change only
    their one verl setting; check_recipe accepts them (verl's entropy_coeff is refused with EPO on)."""
    key, value = VERL_CONTROLS[ablation]
    for name in ("sciworld_grpo", "alfworld_ppo_epo"):
        config, plain = composed(name, f"ablation={ablation}"), composed(name)
        epo = compose.check_recipe(config, stand_in_model=stand_in_model)
        assert not epo.enable
        assert OmegaConf.select(config, key) == value != OmegaConf.select(plain, key)


def test_entropy_bonus_baseline_on_a_plain_recipe(stand_in_model):
    """``sciworld_ppo ablation=entropy_only`` = PPO + entropy bonus (what the authors trained)."""
    config = composed("sciworld_ppo", "ablation=entropy_only")
    epo = compose.check_recipe(config, stand_in_model=stand_in_model)
    assert config.algorithm.adv_estimator == "gae"
    assert epo.enable and epo.use_entropy_term and not epo.use_smoothing
    assert epo.entropy_coef == 0.001


BROKEN = [
    ("epo.kappa_high=-1", "epo.kappa_high"),
    ("epo.kappa_low=3", "epo.kappa_high"),
    ("epo.reference.mode=sliding", "epo.reference.mode"),
    ("actor_rollout_ref.actor.entropy_coeff=0.01", "actor_rollout_ref.actor.entropy_coeff"),
    ("actor_rollout_ref.actor.ppo_mini_batch_size=5", "ppo_mini_batch_size"),
    ("trainer.n_gpus_per_node=3", "trainer.n_gpus_per_node"),
    ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=3", "ppo_micro_batch_size_per_gpu"),
    ("actor_rollout_ref.rollout.tensor_model_parallel_size=3", "tensor_model_parallel_size"),
    ("data.max_response_length=4096", "max_model_len"),
    ("recipe.val_set=sciworld/l9-test", "recipe.val_set"),
    ("env.max_turns=0", "env.max_turns"),
]


@pytest.mark.parametrize("override,key", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_override_names_the_key(override, key):
    config = composed("sciworld_grpo_epo", override)
    with pytest.raises(ValueError, match=re.escape(key)):
        compose.check_recipe(config)


def test_verl_validate_config_runs():
    """A rule only verl checks (sampled validation needs a temperature > 0) stops the recipe."""
    config = composed("alfworld_grpo", "actor_rollout_ref.rollout.val_kwargs.do_sample=true",
                      "actor_rollout_ref.rollout.temperature=0")
    with pytest.raises(compose.RecipeError, match="validate_config rejected.*temperature"):
        compose.check_recipe(config)


def test_unknown_key_and_ablation_are_refused(capsys):
    assert compose.main(["sciworld_ppo_epo", "epo.kapa_high=3"]) == 2
    assert "epo.kapa_high" in capsys.readouterr().err
    assert compose.main(["sciworld_ppo_epo", "ablation=no_such"]) == 2
    assert "ablation/no_such" in capsys.readouterr().err
    with pytest.raises(compose.RecipeError, match="unknown recipe 'sciworld_ppo_ep'"):
        compose.recipe_name("sciworld_ppo_ep")


def readme_commands() -> list[list[str]]:
    """Every ``bash recipes/run.sh <recipe> ...`` command in recipes/README.md, as argument lists."""
    commands = []
    for line in README.read_text().splitlines():
        line = line.strip()
        if line.startswith("bash recipes/run.sh ") and "<" not in line:
            args = [a for a in shlex.split(line)[2:] if a != "--dry-run"]
            commands.append(args)
    return commands


def test_readme_commands_compose_and_pass(stand_in_model):
    commands = readme_commands()
    assert len(commands) >= 12, "the README's launch examples were not found"
    for recipe, *overrides in commands:
        config = composed(recipe, *overrides)
        try:
            compose.check_recipe(config, stand_in_model=stand_in_model)
        except Exception as err:
            raise AssertionError(f"README command fails: {recipe} {' '.join(overrides)}: {err}") from err


def test_run_sh_dry_run(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", VERL_EPO_ROOT=str(tmp_path))
    proc = subprocess.run(
        ["bash", str(RECIPES / "run.sh"), "--dry-run", "alfworld_grpo_epo", "ablation=[no_beta,ref_window]",
         "recipe.seed=3"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for expected in ("trainer_mode: epo", "name: vllm", "alpha: 0.1", "use_phase_weight: false", "mode: window",
                     "experiment_name: alfworld_grpo_epo_no_beta+ref_window_seed3",  # two ablations at once
                     f"default_local_dir: {tmp_path}/runs/alfworld_grpo_epo_no_beta+ref_window_seed3/checkpoints",
                     "updates per step (epo.rows_per_update=2048",
                     "50 turns per episode:   6400 turn rows -> 4 optimizer updates of ~1600 rows",
                     "checks passed (verl validate_config, EPO on)"):
        assert expected in out, f"{expected!r} not in the dry-run output"
    assert not list(tmp_path.iterdir()), "--dry-run must not build or write anything"

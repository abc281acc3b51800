"""The mini-study's plan, budget and method overrides (no training: ``--plan`` builds nothing)."""

import importlib.util
import sys
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
sys.path.insert(0, str(RECIPES))

import mini_study  # noqa: E402
from study_warm_start import WarmStartPlan  # noqa: E402

from verl_epo.trainer import load_epo_config  # noqa: E402

_spec = importlib.util.spec_from_file_location("recipes_compose", RECIPES / "compose.py")
compose = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compose)


def test_plan_lists_every_run_and_builds_nothing(tmp_path, capsys):
    result = mini_study.main(["--plan", "--out", str(tmp_path / "study")])
    assert len(result["runs"]) == 20  # 5 seeds x 4 methods, seed-major
    assert result["runs"][:4] == [("grpo", 1), ("grpo_entropy", 1), ("grpo_epo", 1), ("grpo_epo_hold", 1)]
    printed = capsys.readouterr().out
    assert "grpo_epo_hold-seed5: ++epo.band_mode=hold" in printed and "estimated total" in printed
    assert not (tmp_path / "study").exists()


def test_budget_model_hand_values():
    # 14 steps, validation at 0, 4, 8, 12 and the last step 14 -> 5 passes; 90 + 14·10 + 5·8 = 270 s a run
    assert mini_study.validations(14, 4) == 5 and mini_study.validations(12, 4) == 4
    plan = WarmStartPlan(first_steps=1000, round_steps=250, max_steps=2000, threshold=0.15)
    budget = mini_study.estimate_seconds(runs=20, seeds=5, steps=14, test_freq=4, plan=plan)
    assert budget["per_run"] == pytest.approx(270.0)
    # warm starts: best 5 x (1000·0.13 + 65) = 975 s; worst 5 x (2000·0.13 + 5 checks·65) = 2925 s
    assert (budget["warm_min"], budget["warm_max"]) == pytest.approx((975.0, 2925.0))
    assert budget["total_max"] == pytest.approx(20 * 270 + 2925)


def test_warm_start_folder_depends_on_the_plan(tmp_path):
    a = mini_study.warm_dir(tmp_path, 1, WarmStartPlan())
    assert a != mini_study.warm_dir(tmp_path, 1, WarmStartPlan(threshold=0.25))
    assert a != mini_study.warm_dir(tmp_path, 2, WarmStartPlan())
    with pytest.raises(ValueError, match="warm start plan"):
        WarmStartPlan(first_steps=4000, max_steps=3000)


def test_other_task_sets_get_their_own_data_folder(tmp_path):
    """The study's own data stays where finished studies have it; the cascade sets do not reuse it."""
    assert mini_study.data_dir(tmp_path, "synthetic/train", "synthetic/val") == tmp_path / "shared" / "data"
    cascade = mini_study.data_dir(tmp_path, "synthetic/cascade-train", "synthetic/cascade-val")
    assert cascade.parent == tmp_path / "shared" and cascade.name != "data"
    assert cascade != mini_study.data_dir(tmp_path, "synthetic/cascade-train", "synthetic/val")


@pytest.mark.parametrize("method", list(mini_study.METHODS))
def test_method_overrides_give_the_intended_epo_settings(method):
    config = compose.compose_recipe("cpu_synthetic", [*mini_study.METHODS[method], "trainer.test_freq=4"])
    epo = load_epo_config(config)
    expected = {"grpo": (False, True, "paper"), "grpo_entropy": (True, False, "paper"),
                "grpo_epo": (True, True, "paper"), "grpo_epo_hold": (True, True, "hold")}[method]
    assert (epo.enable, epo.use_smoothing, epo.band_mode) == expected, (method, epo)
    assert epo.use_entropy_term and epo.alpha == 0.05 and epo.entropy_coef == 0.001

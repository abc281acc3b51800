"""The mini-study report over hand-written runs: runaway criterion, band statistics, per-seed table, figure."""

import json
from pathlib import Path

import pytest

from verl_epo.analysis.runs import load_run
from verl_epo.analysis.study import (
    COLLAPSE,
    RUNAWAY,
    CollapseCriterion,
    RunawayCriterion,
    band_stats,
    collapse,
    runaway,
    study_report,
)

VAL = "val-aux/synthetic/val/success/mean@1"


def _write(folder: Path, method: str, seed: int, entropy: list[float], band_high: list[float | None],
           frac_above: list[float], validation: dict[int, float], invalid: list[float] | None = None) -> Path:
    """Steps 0..len(entropy)-1; band_high None = no band yet (step 0); invalid: invalid actions per
    episode of 6 turns, per step."""
    folder.mkdir(parents=True)
    rows = []
    for step, (h, top, frac) in enumerate(zip(entropy, band_high, frac_above, strict=True)):
        data = {"epo/trajectory_entropy": h, "epo/frac_above_band": frac}
        if top is not None:
            data.update({"epo/band_high": top, "epo/band_low": 0.0, "epo/reference_entropy": top / 2})
        if step in validation:
            data[VAL] = validation[step]
        if invalid is not None:
            data.update({"env/invalid_actions": invalid[step], "env/turns": 6.0})
        rows.append({"step": step, "data": data})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "run.json").write_text(json.dumps({"method": method, "seed": seed}))
    return folder


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    band = [None, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    # calm: entropy 0.3 inside the band; tokens above at steps 2 and 4 only -> 2 of 6 steps, mean 0.05/6
    _write(root / "grpo-seed1", "grpo", 1, [0.3] * 7, band, [0, 0, 0.02, 0, 0.03, 0, 0],
           {0: 0.2, 2: 0.4, 4: 0.6, 6: 0.8})
    # two steps above 1.5 x 0.6 = 0.9, one below, two above: never 3 in a row -> no runaway
    # invalid actions per turn 0.5, 0.5, 0.33, 0.5, 0.5, 0.5 from step 1: 3 in a row at or above 0.5 by step 6
    _write(root / "grpo-seed2", "grpo", 2, [0.3, 1.0, 1.0, 0.5, 1.0, 1.0, 0.5], band, [0.5] * 7,
           {0: 0.0, 2: 0.2, 4: 0.2, 6: 0.2}, invalid=[0, 3, 3, 2, 3, 3, 3])
    # 2.5 nats from step 3 on, above 0.9: band criterion met at step 5 (steps 3, 4, 5)
    _write(root / "grpo_epo-seed1", "grpo_epo", 1, [0.3, 0.4, 0.5, 2.5, 2.5, 2.5, 2.5], band, [1.0] * 7,
           {0: 0.2, 2: 0.2, 4: 0.0, 6: 0.0})
    # 3.5 nats at step 2: the nats criterion fires at once
    _write(root / "grpo_epo-seed2", "grpo_epo", 2, [0.3, 0.4, 3.5, 0.3, 0.3, 0.3, 0.3], band, [0.0] * 7,
           {0: 0.0, 2: 0.0, 4: 0.0, 6: 0.0})
    return root


def test_runaway_criterion_hand_cases(study):
    assert runaway(load_run(study / "grpo-seed1")) == {"ran_away": False, "step": None, "why": None}
    assert runaway(load_run(study / "grpo-seed2"))["ran_away"] is False
    assert runaway(load_run(study / "grpo_epo-seed1")) == {"ran_away": True, "step": 5, "why": "band"}
    assert runaway(load_run(study / "grpo_epo-seed2")) == {"ran_away": True, "step": 2, "why": "nats"}
    # a looser criterion (2 consecutive steps) catches seed 2 of grpo at step 2
    assert runaway(load_run(study / "grpo-seed2"), RunawayCriterion(consecutive=2))["step"] == 2
    assert RUNAWAY.describe().startswith("trajectory entropy (Eq. 2) > 3 nats")


def test_collapse_criterion_hand_cases(study):
    assert collapse(load_run(study / "grpo-seed2")) == {"collapsed": True, "step": 6}
    assert collapse(load_run(study / "grpo-seed2"), CollapseCriterion(consecutive=4))["collapsed"] is False
    assert collapse(load_run(study / "grpo-seed1")) == {"collapsed": False, "step": None}  # not logged
    assert COLLAPSE.describe().startswith("invalid actions per turn")


def test_band_stats_hand_values(study):
    stats = band_stats(load_run(study / "grpo-seed1"))
    assert stats["steps_with_band"] == 6 and stats["steps_above"] == 2  # step 0 has no band
    assert stats["frac_steps_above"] == pytest.approx(2 / 6)
    assert stats["mean_frac_tokens_above"] == pytest.approx(0.05 / 6)
    assert stats["peak_entropy"] == 0.3


@pytest.mark.filterwarnings("error::UserWarning")  # e.g. matplotlib's "no artists" for an empty panel
def test_study_report_tables_and_figure(study, tmp_path):
    warm = {1: {"seed": 1, "steps": 1250, "sampled_success": 0.203125, "accuracy": 0.97, "answer_loss": 0.61,
                "learned": True},
            2: {"seed": 2, "steps": 3000, "sampled_success": 0.0625, "accuracy": 0.40, "answer_loss": 0.80,
                "learned": False}}
    result = study_report([study], tmp_path / "out", last_n=3, warm_starts=warm)
    by_method = {m["method"]: m for m in result["methods"]}
    # grpo: last 3 validation points 0.4, 0.6, 0.8 -> 0.6 and 0.2, 0.2, 0.2 -> 0.2; mean 0.4, std 0.2828
    assert by_method["grpo"]["success"]["mean"] == pytest.approx(0.4)
    assert by_method["grpo"]["success"]["std"] == pytest.approx(0.28284271)
    assert by_method["grpo"]["runaways"] == 0 and by_method["grpo_epo"]["runaways"] == 2
    assert by_method["grpo_epo"]["runaway_seeds"] == [1, 2]
    # steps with tokens above: grpo 2/6 and 6/6 -> mean 2/3
    assert by_method["grpo"]["frac_steps_above"]["mean"] == pytest.approx((2 / 6 + 1) / 2)
    seeds = {s["seed"]: s for s in result["seeds"]}
    # before RL: first validation points of seed 1's runs, 0.2 and 0.2
    assert seeds[1]["initial_success"] == pytest.approx(0.2) and seeds[1]["warm_start_steps"] == 1250
    assert seeds[2]["learned"] is False and seeds[2]["runs"] == 2
    text = (tmp_path / "out" / "study.md").read_text()
    assert "| grpo_epo | 1, 2 | 3.3 ± 4.7 | 2 of 2 (seed 1, 2) | 0 of 2 |" in text, text
    assert "| grpo | 1, 2 | 40.0 ± 28.3 | 0 of 2 | 1 of 2 (seed 2) |" in text, text
    assert "| 2 | 3000 | 6.2 | 0.40 | 0.800 | no | 0.0 | 2 |" in text, text
    assert (tmp_path / "out" / "entropy_per_seed.png").stat().st_size > 10_000
    assert (tmp_path / "out" / "results.md").is_file()  # the general report is written too
    saved = json.loads((tmp_path / "out" / "study.json").read_text())
    assert saved["criterion"] == {"nats": 3.0, "band_factor": 1.5, "consecutive": 3}

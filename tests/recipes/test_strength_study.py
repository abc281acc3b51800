"""The strength study's plan, run overrides and report (no training: hand-written run folders)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
sys.path.insert(0, str(RECIPES))

import strength_study  # noqa: E402

from verl_epo.analysis.strength import cell_label, parse_label  # noqa: E402
from verl_epo.trainer import load_epo_config  # noqa: E402

_spec = importlib.util.spec_from_file_location("recipes_compose", RECIPES / "compose.py")
compose = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compose)
VAL = "val-aux/synthetic/val/success/mean@1"


def test_plan_lists_the_cells_set_major(tmp_path, capsys):
    result = strength_study.main(["--plan", "--out", str(tmp_path / "s"), "--entropy-coefs", "0.001", "0.1"])
    runs = result["runs"]
    assert len(runs) == 2 * 3 * (1 + 3 * 2)  # sets x seeds x (GRPO once + 3 methods x 2 λ)
    assert runs[0] == ("corridor", 1, "grpo", None) and runs[1] == ("corridor", 1, "grpo_entropy", 0.001)
    assert all(r[0] == "corridor" for r in runs[:21]) and all(r[0] == "cascade" for r in runs[21:])
    printed = capsys.readouterr().out
    assert "corridor/grpo_epo_hold_lam0.1-seed3" in printed and "42 to train" in printed
    assert not (tmp_path / "s").exists()


def test_labels_round_trip():
    assert cell_label("grpo", None) == "grpo" and parse_label("grpo") == ("grpo", None)
    assert parse_label(cell_label("grpo_epo_hold", 0.03)) == ("grpo_epo_hold", 0.03)
    assert parse_label(cell_label("grpo_entropy", 1e-3)) == ("grpo_entropy", 1e-3)


def test_a_cell_trains_with_its_lambda_and_the_diagnostic():
    """The overrides a (method, λ) run gets give those EPO settings in the composed CPU recipe."""
    from mini_study import METHODS

    config = compose.compose_recipe("cpu_synthetic", [*METHODS["grpo_epo_hold"], "epo.entropy_coef=0.1",
                                                      "++epo.diagnostic_every=2"])
    epo = load_epo_config(config)
    assert (epo.entropy_coef, epo.band_mode, epo.diagnostic_every) == (0.1, "hold", 2)


def _run(folder: Path, label: str, seed: int, success: list[float], share: float, entropy: float, invalid=0.0):
    folder.mkdir(parents=True)
    rows = []
    for step in range(13):
        data = {"epo/trajectory_entropy": entropy, "epo/band_high": 1.0, "env/invalid_actions": invalid,
                "env/turns": 6.0, "epo/band/traj_inside": 0.5}
        if step % 4 == 0:
            data[VAL] = success[step // 4]
        if step % 2 == 1:
            data["epo/update/step_share"] = share
        rows.append({"step": step, "data": data})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "run.json").write_text(json.dumps({"method": label, "seed": seed, "status": "complete"}))


@pytest.mark.filterwarnings("error::UserWarning")
def test_report_table_and_figure(tmp_path):
    out = tmp_path / "s"
    argv = ["--out", str(out), "--sets", "corridor", "--seeds", "1", "2", "--methods", "grpo", "grpo_epo",
            "--entropy-coefs", "0.001", "0.1"]
    # last 2 validation points (steps 8, 12); grpo 0.5 and 0.7 -> 60.0 ± 14.1
    _run(out / "corridor" / "grpo-seed1", "grpo", 1, [0, 0, 0.4, 0.6], 0.0, 0.3)
    _run(out / "corridor" / "grpo-seed2", "grpo", 2, [0, 0, 0.6, 0.8], 0.0, 0.3)
    _run(out / "corridor" / "grpo_epo_lam0.1-seed1", "grpo_epo_lam0.1", 1, [0, 0, 0, 0], 0.4, 3.5, invalid=4.0)
    # grpo_epo at 0.001 never finished: reported as missing, not as a zero
    result = strength_study.main([*argv, "--report-only", "--last-n", "2"])
    text = (out / "strength.md").read_text()
    assert "| corridor | grpo | – | 1, 2 | 60.0 ± 14.1 | 0.0 ± 0.0 |" in text, text
    assert "| corridor | grpo_epo | 0.1 | 1 | 0.0 | 40.0 |" in text and "| 1 of 1 | 1 of 1 |" in text, text
    assert "0.001" not in text.split("Mean ±")[0]
    assert len(result["done"]) == 3 and result["figure"].stat().st_size > 10_000
    assert (out / "corridor" / "report" / "study.md").is_file()

"""The report over hand-written run directories: last-N means, mean ± sample std over seeds, plots."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from verl_epo.analysis.report import report
from verl_epo.analysis.runs import find_runs
from verl_epo.analysis.tables import last_n_mean

VAL = "val-aux/synthetic/val/success/mean@1"  # the data source is the task set's name
VAL2 = "val-aux/other/success/mean@4"
ROOT = Path(__file__).resolve().parents[2]

# validation success at steps 0, 5, 10, 15, 20 per (method, seed); an early best point (1.0 at step 0
# or 5) must not leak into the last-3 window (steps 10, 15, 20)
VALIDATION = {
    ("grpo", 1): [0.1, 1.0, 0.5, 0.6, 0.7],  # last 3 -> 0.6
    ("grpo", 2): [1.0, 0.2, 0.4, 0.5, 0.6],  # -> 0.5
    ("grpo", 3): [0.0, 0.3, 0.7, 0.8, 0.9],  # -> 0.8
    ("grpo_epo", 1): [0.2, 0.4, 0.75, 0.75, 0.75],  # -> 0.75
    ("grpo_epo", 2): [0.2, 0.4, 0.25, 0.25, 0.25],  # -> 0.25
}
# hand-computed: grpo 0.6, 0.5, 0.8 -> mean 0.633333, sample std sqrt(0.046667 / 2) = 0.152753
#                grpo_epo 0.75, 0.25 -> mean 0.5, sample std 0.353553


def _write_run(folder: Path, values: list[float], with_run_json: tuple[str, int] | None = None) -> None:
    folder.mkdir(parents=True)
    rows = []
    for step in range(0, 21):
        data = {"env/success": step / 40, "epo/trajectory_entropy": 2.0 - step / 20,
                "epo/reference_entropy": 1.8, "epo/band_low": 0.0, "epo/band_high": 3.6,
                "epo/frac_above_band": 0.01, "epo/frac_below_band": 0.0,
                "epo/entropy_turn_000": 2.0, "epo/entropy_turn_004": 1.5 - step / 100}
        if step % 5 == 0:
            data[VAL] = values[step // 5]
            data[VAL2] = 0.5
        if step % 10 == 1:  # the update share, measured at steps 1 and 11 (epo.diagnostic_every=10)
            data["epo/update/step_share"] = values[0] + step / 100
        rows.append({"step": step, "data": data})
    # a resumed run logs its last step again: the later line wins
    rows.append({"step": 20, "data": {VAL: values[-1]}})
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (folder / "metrics.jsonl").write_text(text + '{"step": 21, "da')  # and a torn last line
    if with_run_json:
        (folder / "run.json").write_text(json.dumps({"method": with_run_json[0], "seed": with_run_json[1]}))


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    for (method, seed), values in VALIDATION.items():
        if (method, seed) == ("grpo_epo", 2):  # named only by run.json
            _write_run(root / "second-epo-run", values, with_run_json=(method, seed))
        else:
            _write_run(root / f"{method}-seed{seed}", values)
    # final evaluations (env_adapters.evaluate summaries): grpo 0.4, 0.5, 0.9 -> mean 0.6, std sqrt(0.07)
    for seed, success in [(1, 0.4), (2, 0.5), (3, 0.9)]:
        _write_eval(root / f"grpo-seed{seed}" / "eval" / "final", success, complete=True)
    _write_eval(root / "grpo_epo-seed1" / "eval" / "final", 0.7, complete=False)  # interrupted: left out
    return root


def _write_eval(folder: Path, success: float, complete: bool) -> None:
    folder.mkdir(parents=True)
    summary = {"sets": {"synthetic/long": {"complete": complete, "episodes": 48 if complete else 20,
                                           "expected_episodes": 48,
                                           "success": {"mean": success, "std": 0.1, "n_seeds": 3}}}}
    (folder / "summary.json").write_text(json.dumps(summary))


def test_last_n_mean_uses_the_last_points_not_the_best():
    assert last_n_mean({0: 1.0, 5: 0.2, 10: 0.4, 15: 0.6}, 3) == (pytest.approx(0.4), [5, 10, 15])
    assert last_n_mean({3: 0.5}, 3) == (0.5, [3])
    assert last_n_mean({}, 3) is None
    with pytest.raises(ValueError, match="--last-n"):
        last_n_mean({0: 1.0}, 0)


def test_table_mean_and_std_match_hand_computation(study, tmp_path):
    result = report([study], tmp_path, last_n=3, per_run_plots=False)
    cells = {(e["method"], e["metric"]): e for e in result["table"]}
    grpo = cells[("grpo", VAL)]
    assert grpo["per_seed"] == {1: pytest.approx(0.6), 2: pytest.approx(0.5), 3: pytest.approx(0.8)}
    assert grpo["mean"] == pytest.approx(0.633333, abs=1e-6)
    assert grpo["std"] == pytest.approx(0.152753, abs=1e-6)
    assert grpo["steps"][1] == [10, 15, 20]
    epo = cells[("grpo_epo", VAL)]
    assert epo["seeds"] == [1, 2] and epo["mean"] == pytest.approx(0.5)
    assert epo["std"] == pytest.approx(0.353553, abs=1e-6)
    assert cells[("grpo", VAL2)]["mean"] == pytest.approx(0.5) and cells[("grpo", VAL2)]["std"] == 0.0
    final = cells[("grpo", "eval:synthetic/long")]
    assert final["mean"] == pytest.approx(0.6) and final["std"] == pytest.approx(0.264575, abs=1e-6)
    assert cells[("grpo_epo", "eval:synthetic/long")]["n_seeds"] == 0

    markdown = (tmp_path / "results.md").read_text()
    assert "synthetic/long final eval (%)" in markdown and "synthetic/val success@1 (%)" in markdown
    assert "| grpo | 1, 2, 3 | 50.0 ± 0.0 | 63.3 ± 15.3 | 60.0 ± 26.5 |" in markdown
    assert "| grpo_epo | 1, 2 | 50.0 ± 0.0 | 50.0 ± 35.4 | – |" in markdown
    assert "last 3 validation points" in markdown
    with open(tmp_path / "results.csv") as f:
        rows = {(r["method"], r["metric"]): r for r in csv.DictReader(f)}
    assert float(rows[("grpo", VAL)]["mean"]) == pytest.approx(0.633333, abs=1e-6)
    assert float(rows[("grpo", VAL)]["std"]) == pytest.approx(0.152753, abs=1e-6)
    assert rows[("grpo", VAL)]["points_per_seed"] == "1:3 2:3 3:3"


def test_last_n_is_configurable(study, tmp_path):
    result = report([study], tmp_path, last_n=1, per_run_plots=False)
    grpo = next(e for e in result["table"] if e["method"] == "grpo" and e["metric"] == VAL)
    assert grpo["per_seed"] == {1: pytest.approx(0.7), 2: pytest.approx(0.6), 3: pytest.approx(0.9)}


def test_plots_are_written(study, tmp_path):
    result = report([study], tmp_path, per_run_plots=True)
    names = {p.name for p in result["plots"]}
    assert {"success.png", "entropy.png", "band_fractions.png", "entropy_by_turn_grpo.png",
            "entropy_by_turn_grpo_epo.png"} <= names
    for plot in result["plots"]:
        assert plot.is_file() and plot.stat().st_size > 5000, plot
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    single = {p.name for p in (tmp_path / "runs" / "grpo-seed1").iterdir()}
    assert single == {"success.png", "entropy.png", "band_fractions.png", "update_share.png", "entropy_by_turn.png"}


def test_strength_table_averages_the_measured_steps(study, tmp_path):
    """Per run the mean of its measured steps (1 and 11: first value + 0.01, + 0.11), then mean ± std
    over seeds: grpo (0.16, 1.06, 0.06) -> 42.7 ± 55.1 %; unlogged columns are left out."""
    markdown = report([study], tmp_path, per_run_plots=False)["markdown"]
    lines = markdown.split("How strongly")[0].splitlines()
    header = next(line for line in lines if "Adam's step" in line)
    assert "inside the band" not in header
    grpo = next(line for line in lines[lines.index(header):] if line.startswith("| grpo |"))
    assert grpo == "| grpo | 42.7 ± 55.1 |"


def test_command_line(study, tmp_path):
    out = subprocess.run([sys.executable, "-m", "verl_epo.analysis.report", str(study), "--out", str(tmp_path),
                          "--no-run-plots"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "63.3 ± 15.3" in out and "plot: " in out


def test_bad_run_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_runs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        find_runs([tmp_path / "empty"])
    unnamed = tmp_path / "unnamed"
    unnamed.mkdir()
    (unnamed / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="<method>-seed<N>"):
        find_runs([unnamed])
    twin = tmp_path / "twin"
    _write_run(twin, [0.0] * 5, with_run_json=("grpo", 1))
    _write_run(tmp_path / "grpo-seed1", [0.0] * 5)
    with pytest.raises(ValueError, match="both grpo seed 1"):
        find_runs([twin, tmp_path / "grpo-seed1"])


def test_recipe_run_names(tmp_path):
    _write_run(tmp_path / "sciworld_grpo_epo_seed2", [0.0] * 5)
    (run,) = find_runs([tmp_path / "sciworld_grpo_epo_seed2"])
    assert (run.method, run.seed) == ("sciworld_grpo_epo", 2)


def test_resumed_run_logs_to_a_second_file(tmp_path):
    # verl's file logger truncates its file on start: a resumed run writes metrics.<suffix>.jsonl
    run = tmp_path / "grpo-seed7"
    _write_run(run, [0.0, 0.0, 0.0, 0.0, 0.0])
    later = [{"step": 20, "data": {VAL: 0.9}}, {"step": 25, "data": {VAL: 0.6}}, {"step": 30, "data": {VAL: 0.3}}]
    (run / "metrics.2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in later))
    (loaded,) = find_runs([run])
    assert loaded.metrics[VAL][0] == 0.0 and loaded.metrics[VAL][20] == 0.9
    assert last_n_mean(loaded.metrics[VAL], 3) == (pytest.approx(0.6), [20, 25, 30])

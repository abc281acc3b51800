"""Reading training runs: verl's file-logger JSONL, run folders, final evaluations.

A run folder holds ``metrics.jsonl`` (``trainer.logger=[file]``; rows ``{"step": N, "data": {metric:
value}}``; a resumed run's later ``metrics.<suffix>.jsonl`` files are read after it) and names its
method and seed in ``run.json`` (``{"method": "grpo_epo", "seed": 1}``) or, without one, in its own
name ``<method>-seed<N>`` or ``<method>_seed<N>`` (``grpo_epo-seed1``, or ``sciworld_grpo_epo_seed1``
as ``recipes/run.sh`` names its runs). Final evaluations of a run's last checkpoint
(``python -m env_adapters.evaluate ... --out <run>/eval/<name>``) are read from their
``summary.json``.

Pure analysis: reads files, imports nothing from the games or from verl.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RUN_NAME = re.compile(r"^(?P<method>.+)[-_]seed(?P<seed>\d+)$")
VALIDATION_SUCCESS = re.compile(r"^val-aux/(?P<source>.+)/success/mean@(?P<n>\d+)$")
"""The data source is the task set's name (``synthetic/val``, ``sciworld/l0-test-small``), slashes included."""
TRAIN_SUCCESS = "env/success"
EVAL_DIR = "eval"

Metrics = dict[str, dict[int, float]]
"""{metric: {step: value}}."""


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows ``{"step": int, "data": {metric: value}}``; a half-written last line is skipped."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def metrics_by_step(rows: list[dict[str, Any]]) -> Metrics:
    """{metric: {step: value}} of the finite numbers; a step logged twice (resumed run) keeps the last."""
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for row in rows:
        for key, value in row.get("data", {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value):
                out[key][int(row["step"])] = float(value)
    return dict(out)


def points(values_by_step: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) in step order."""
    ordered = sorted(values_by_step.items())
    return np.array([s for s, _ in ordered]), np.array([v for _, v in ordered])


def series(rows: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric of a metrics log, skipping steps where it is absent or not finite."""
    return points(metrics_by_step(rows).get(key, {}))


def validation_keys(keys: Any) -> list[str]:
    """The validation success metrics among ``keys`` (verl logs ``val-aux/<source>/success/mean@N``)."""
    return sorted({k for k in keys if VALIDATION_SUCCESS.match(k)})


def validation_success_key(rows: list[dict[str, Any]]) -> str | None:
    """The first validation success metric of a metrics log, or None."""
    keys = validation_keys(k for r in rows for k in r.get("data", {}))
    return keys[0] if keys else None


def source_of(key: str) -> str:
    """The data source of a validation metric: ``val-aux/synthetic/val/success/mean@1`` -> ``synthetic/val``."""
    return VALIDATION_SUCCESS.match(key)["source"]


@dataclass
class Run:
    """One training run: its method, seed and metrics by name as {step: value}."""

    name: str
    method: str
    seed: int
    path: Path
    metrics: Metrics = field(default_factory=dict)
    evaluations: dict[str, tuple[float, int]] = field(default_factory=dict)
    """Final evaluation per task set: (success averaged over evaluation seeds, number of seeds)."""

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        return points(self.metrics.get(key, {}))


def metric_files(path: Path) -> list[Path]:
    """``metrics.jsonl``, then any ``metrics.<suffix>.jsonl`` in name order (later files win a step).

    verl's file logger truncates its file when a run starts, so a resumed run must log to a new
    file (e.g. ``metrics.<timestamp>.jsonl``) in the same directory to keep the earlier steps.
    """
    return [path / "metrics.jsonl", *sorted(path.glob("metrics.*.jsonl"))]


def run_identity(path: Path) -> tuple[str, int]:
    """(method, seed) from ``run.json`` or the folder name ``<method>-seed<N>``."""
    info_file = path / "run.json"
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        if "method" not in info or "seed" not in info:
            raise ValueError(f"{info_file} must name the run's method and seed, e.g. "
                             '{"method": "grpo_epo", "seed": 1}')
        return str(info["method"]), int(info["seed"])
    match = RUN_NAME.match(path.name)
    if match is None:
        raise ValueError(f"cannot tell the method and seed of {path}: name it <method>-seed<N> or "
                         '<method>_seed<N> (e.g. grpo_epo-seed1) or add run.json {"method": ..., "seed": ...}')
    return match["method"], int(match["seed"])


def load_run(path: str | Path) -> Run:
    """Read one run directory; method and seed from ``run.json`` or the name ``<method>-seed<N>``."""
    path = Path(path)
    if not (path / "metrics.jsonl").is_file():
        raise FileNotFoundError(f"{path} has no metrics.jsonl; train with trainer.logger=[console,file] and "
                                "VERL_FILE_LOGGER_PATH=<run dir>/metrics.jsonl")
    method, seed = run_identity(path)
    rows = [row for f in metric_files(path) for row in read_jsonl(f)]
    return Run(path.name, method, seed, path, metrics_by_step(rows), evaluation_results(path))


def evaluation_results(path: Path) -> dict[str, tuple[float, int]]:
    """Success per set from ``python -m env_adapters.evaluate`` summaries under ``<run>/eval/``.

    Only complete evaluations count (an interrupted one is reported and left out); a set evaluated
    twice for one run is an error.
    """
    found: dict[str, tuple[float, int]] = {}
    for file in sorted((path / EVAL_DIR).glob("**/summary.json")):
        for set_name, result in json.loads(file.read_text()).get("sets", {}).items():
            if set_name in found:
                raise ValueError(f"{path} has two final evaluations of {set_name}; keep one under {EVAL_DIR}/")
            if not result.get("complete") or result["success"]["mean"] is None:
                print(f"[report] {file}: evaluation of {set_name} is incomplete "
                      f"({result.get('episodes')}/{result.get('expected_episodes')} episodes), left out; "
                      "rerun the same command to finish it", file=sys.stderr)
                continue
            found[set_name] = (float(result["success"]["mean"]), int(result["success"]["n_seeds"]))
    return found


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Runs from the given directories (a directory without metrics.jsonl: the runs inside it)."""
    runs: list[Run] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise FileNotFoundError(f"run directory {p} does not exist")
        if (p / "metrics.jsonl").is_file():
            runs.append(load_run(p))
        else:
            inner = sorted(d for d in p.iterdir() if (d / "metrics.jsonl").is_file())
            if not inner:
                raise FileNotFoundError(f"{p} has no metrics.jsonl, nor any run directory with one")
            runs += [load_run(d) for d in inner]
    seen: dict[tuple[str, int], str] = {}
    for run in runs:
        if (run.method, run.seed) in seen:
            raise ValueError(f"runs {seen[(run.method, run.seed)]} and {run.path} are both {run.method} seed "
                             f"{run.seed}; pass each run once")
        seen[(run.method, run.seed)] = str(run.path)
    return runs


def methods_in_order(runs: list[Run]) -> list[str]:
    return list(dict.fromkeys(r.method for r in runs))


def validation_metrics(runs: list[Run]) -> list[str]:
    """The validation success metrics any of ``runs`` logged."""
    return validation_keys(k for r in runs for k in r.metrics)

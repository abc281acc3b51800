"""Pictures of one training run, from verl's file-logger JSONL (``trainer.logger=[file]``).

- ``success.png``: training success (``env/success``) and validation success vs step;
- ``entropy.png``: trajectory-level entropy (Eq. 2) with the reference H̄_ref and the κ band;
- ``entropy_by_turn.png``: heatmap of mean entropy per turn-index bucket (rows) and step (columns);
- ``band_fractions.png``: fraction of tokens above / below the band.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows ``{"step": int, "data": {metric: value}}``; a half-written last line is skipped."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def series(rows: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric, skipping steps where it is absent or not finite."""
    points = [(r["step"], float(r["data"][key])) for r in rows
              if isinstance(r["data"].get(key), int | float) and np.isfinite(r["data"][key])]
    if not points:
        return np.array([]), np.array([])
    steps, values = zip(*points, strict=True)
    return np.asarray(steps), np.asarray(values)


def validation_success_key(rows: list[dict[str, Any]]) -> str | None:
    """verl logs validation per data source: ``val-aux/<source>/success/mean@N``."""
    keys = sorted({k for r in rows for k in r["data"] if k.startswith("val-aux/") and "/success/mean@" in k})
    return keys[0] if keys else None


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_run(metrics_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write the run's plots to ``out_dir``; returns the files written."""
    rows = read_jsonl(metrics_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps, values = series(rows, "env/success")
    ax.plot(steps, values, marker=".", label="training episodes")
    val_key = validation_success_key(rows)
    if val_key:
        steps, values = series(rows, val_key)
        source = val_key.removeprefix("val-aux/").rsplit("/success/", 1)[0]
        ax.plot(steps, values, marker="o", label=f"validation ({source})")
    ax.set(xlabel="step", ylabel="success rate", ylim=(-0.02, 1.02), title="Success")
    ax.legend(loc="best")
    written.append(_save(fig, out / "success.png"))

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps, traj = series(rows, "epo/trajectory_entropy")
    ax.plot(steps, traj, marker=".", label="trajectory entropy (Eq. 2)")
    ref_steps, ref = series(rows, "epo/reference_entropy")
    if len(ref):
        _, low = series(rows, "epo/band_low")
        _, high = series(rows, "epo/band_high")
        ax.plot(ref_steps, ref, color="black", linestyle="--", label="reference H̄_ref")
        ax.fill_between(ref_steps, low, high, color="tab:green", alpha=0.15, label="κ band")
    ax.set(xlabel="step", ylabel="entropy (nats)", title="Entropy dynamics")
    ax.legend(loc="best")
    written.append(_save(fig, out / "entropy.png"))

    bucket_keys = sorted({k for r in rows for k in r["data"] if k.startswith("epo/entropy_turn_")})
    if bucket_keys:
        all_steps = sorted({r["step"] for r in rows})
        grid = np.full((len(bucket_keys), len(all_steps)), np.nan)
        for r in rows:
            for i, key in enumerate(bucket_keys):
                if key in r["data"]:
                    grid[i, all_steps.index(r["step"])] = r["data"][key]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        image = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis",
                          extent=(all_steps[0] - 0.5, all_steps[-1] + 0.5, -0.5, len(bucket_keys) - 0.5))
        ax.set_yticks(range(len(bucket_keys)), [f"turn {int(k.rsplit('_', 1)[1])}+" for k in bucket_keys])
        ax.set(xlabel="step", title="Entropy by turn index")
        fig.colorbar(image, ax=ax, label="entropy (nats)")
        written.append(_save(fig, out / "entropy_by_turn.png"))

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in [("epo/frac_above_band", "above κ_r·H̄_ref"), ("epo/frac_below_band", "below κ_l·H̄_ref")]:
        steps, values = series(rows, key)
        ax.plot(steps, values, marker=".", label=label)
    ax.set(xlabel="step", ylabel="fraction of tokens", title="Tokens outside the band")
    ax.legend(loc="best")
    written.append(_save(fig, out / "band_fractions.png"))
    return written

"""The allowed values of EPO's hyper-parameters, in one place.

The math calls these checks on its arguments and ``verl_epo.config`` calls the same ones on the
``epo:`` section, so a setting the config accepts is one the math accepts. Each raises
``BoundError`` naming the parameter (as the config names it) and its allowed range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "BoundError",
    "check_band",
    "check_choice",
    "check_coefficient",
    "check_history",
    "check_positive_int",
]


class BoundError(ValueError):
    """A hyper-parameter outside its allowed range."""

    def __init__(self, name: str, value: Any, allowed: str, message: str | None = None) -> None:
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(message or f"{name} must be {allowed}, got {value!r}")


def check_coefficient(name: str, value: Any) -> None:
    """λ, α, γ, κ_l, κ_r: a finite number >= 0."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if not ok:
        raise BoundError(name, value, "a finite number >= 0")


def check_band(kappa_low: Any, kappa_high: Any) -> None:
    """Eq. 3's band [κ_l·H̄_ref, κ_r·H̄_ref]: both factors finite and >= 0, κ_r > κ_l."""
    check_coefficient("kappa_low", kappa_low)
    check_coefficient("kappa_high", kappa_high)
    if not kappa_high > kappa_low:
        band = "the band [κ_l·H̄_ref, κ_r·H̄_ref]; paper: 0, 2"
        raise BoundError("kappa_high", kappa_high, f"greater than kappa_low={kappa_low} ({band})")


def check_positive_int(name: str, value: Any) -> None:
    """A count: an integer >= 1 (a YAML ``true`` is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BoundError(name, value, "an integer >= 1")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """One of a fixed set of names."""
    if value not in choices:
        raise BoundError(name, value, f"one of {tuple(choices)}")


HISTORY_MODES = ("cumulative", "window", "ema")
"""How the entropy history forms Eq. 3's reference (``verl_epo.algorithm.history``)."""


def check_history(mode: Any, window: Any = None, decay: Any = None) -> None:
    """The entropy history behind Eq. 3's reference: ``mode`` in ``HISTORY_MODES``; ``window`` an
    integer >= 1 (needed by mode 'window'); ``decay`` in [0, 1) (needed by mode 'ema'). A setting
    given for another mode is still checked."""
    check_choice("mode", mode, HISTORY_MODES)
    if window is not None:
        check_positive_int("window", window)
    if decay is not None:
        number = isinstance(decay, int | float) and not isinstance(decay, bool)
        if not number or not 0.0 <= decay < 1.0:
            raise BoundError("decay", decay, "in [0, 1)")
    if mode == "window" and window is None:
        needs = "mode 'window' needs window: an integer >= 1 (number of steps)"
        raise BoundError("window", None, "an integer >= 1", needs)
    if mode == "ema" and decay is None:
        raise BoundError("decay", None, "in [0, 1)", "mode 'ema' needs decay: a number in [0, 1)")

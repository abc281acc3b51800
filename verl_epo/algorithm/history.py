"""Entropy history H̄_0, H̄_1, ... and the smoothing reference H̄_ref(k) it yields (Eq. 3).

The paper's reference is the cumulative mean of the batch-average entropies of ALL previous
steps, H̄_ref(k) = (1/k) Σ_{m<k} H̄_m; at k = 0 there is none. The trainer reads ``.reference``
before training step k and calls ``.update(H̄_k)`` after it, so the reference never includes
the step being trained (the authors' code included it). Optional modes: a sliding window over
the last steps, an exponential moving average, and one history per turn index.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from verl_epo.algorithm.bounds import HISTORY_MODES, check_history

__all__ = ["EntropyHistory", "PerTurnEntropyHistory", "HISTORY_MODES", "reference_per_token"]


def _finite(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be a number, got {value!r}") from err
    if not math.isfinite(number):
        raise ValueError(
            f"{what} must be finite, got {number}; a NaN/inf batch entropy means the policy's "
            "logits diverged: do not record it"
        )
    return number


class EntropyHistory:
    """Record of per-step batch-average entropies H̄_m and the Eq. 3 reference H̄_ref.

    Args:
        mode: ``"cumulative"`` (paper, default): mean of all recorded values;
            ``"window"``: mean of the last ``window`` values (fewer while fewer exist);
            ``"ema"``: exponential moving average ``r ← decay·r + (1−decay)·H̄``, the first
            value initialises ``r``.
        window: size of the window, an integer >= 1; required by mode "window", ignored by the
            others (still validated when given).
        decay: EMA decay in [0, 1); required by mode "ema", ignored by the others (still
            validated when given).
    """

    def __init__(
        self, mode: str = "cumulative", window: int | None = None, decay: float | None = None
    ) -> None:
        check_history(mode, window, decay)
        self.mode = mode
        self.window = window
        self.decay = None if decay is None else float(decay)
        self._values: list[float] = []
        self._ema: float | None = None

    @property
    def num_updates(self) -> int:
        """Number of recorded steps (k once step k-1 has been recorded)."""
        return len(self._values)

    @property
    def values(self) -> list[float]:
        """A copy of the recorded batch means H̄_0, H̄_1, ... in order."""
        return list(self._values)

    @property
    def reference(self) -> float | None:
        """H̄_ref from the recorded steps only; None before the first update."""
        if not self._values:
            return None
        if self.mode == "ema":
            return self._ema
        recent = self._values if self.mode == "cumulative" else self._values[-self.window :]
        # fsum: exact sum, so the reference does not drift with the number of steps
        return math.fsum(recent) / len(recent)

    def update(self, batch_mean: float) -> None:
        """Record H̄_m, the batch-average token entropy of the step just trained."""
        value = _finite(batch_mean, "batch_mean")
        self._values.append(value)
        if self.mode == "ema":
            previous = self._ema
            self._ema = (
                value if previous is None else self.decay * previous + (1 - self.decay) * value
            )

    def state_dict(self) -> dict[str, Any]:
        """Plain-python, JSON-serialisable state: mode, window, decay and every recorded value."""
        return {
            "mode": self.mode,
            "window": self.window,
            "decay": self.decay,
            "values": list(self._values),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``; the settings must match this object's (resume is exact)."""
        try:
            settings = (state["mode"], state["window"], state["decay"])
            values = [_finite(v, "recorded entropy value") for v in state["values"]]
        except (KeyError, TypeError) as err:
            raise ValueError(
                "state is not an EntropyHistory state_dict (needs keys mode, window, decay, "
                f"values); got {state!r:.200}"
            ) from err
        if settings != (self.mode, self.window, self.decay):
            raise ValueError(
                f"saved history settings (mode, window, decay) = {settings} differ from the "
                f"configured ones {(self.mode, self.window, self.decay)}; resume with the saved "
                "settings or use EntropyHistory.from_state_dict"
            )
        self._values = []
        self._ema = None
        # replaying the updates rebuilds the EMA with the very same float operations
        for value in values:
            self.update(value)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> EntropyHistory:
        """A new history with the saved settings and values."""
        history = cls(state["mode"], state["window"], state["decay"])
        history.load_state_dict(state)
        return history


class PerTurnEntropyHistory:
    """One ``EntropyHistory`` per turn index: the per-turn reference option of Eq. 3.

    Turn t of every trajectory is compared with the history of turn t's batch means, since
    early and late turns of a long episode have different natural entropy levels.

    Unseen turn indices (no recorded value yet, e.g. an episode longer than any before) take
    ``fallback`` when one is given (e.g. the global ``EntropyHistory.reference``), otherwise the
    reference of the nearest lower recorded turn index (the latest turns are the closest in
    kind), or of the nearest higher one when there is no lower one.

    Args:
        mode, window, decay: as in ``EntropyHistory``, applied to every turn index.
    """

    def __init__(
        self, mode: str = "cumulative", window: int | None = None, decay: float | None = None
    ) -> None:
        EntropyHistory(mode, window, decay)  # validates the settings once, up front
        self.mode = mode
        self.window = window
        self.decay = None if decay is None else float(decay)
        self._turns: dict[int, EntropyHistory] = {}
        self._num_updates = 0

    @property
    def num_updates(self) -> int:
        """Number of ``update`` calls (training steps recorded)."""
        return self._num_updates

    @property
    def turn_indices(self) -> list[int]:
        """Turn indices with at least one recorded value, ascending."""
        return sorted(self._turns)

    def history(self, turn_index: int) -> EntropyHistory | None:
        """The history of one turn index, or None if it was never recorded."""
        return self._turns.get(turn_index)

    def update(self, turn_means: dict[int, float]) -> None:
        """Record one step's batch means per turn index ``{turn_index: H̄_m(t)}``."""
        checked: dict[int, float] = {}
        for turn, value in turn_means.items():
            if isinstance(turn, bool) or int(turn) != turn or int(turn) < 0:
                raise ValueError(f"turn indices must be integers >= 0, got {turn!r}")
            checked[int(turn)] = _finite(value, f"batch mean of turn {turn}")
        for turn, value in checked.items():
            if turn not in self._turns:
                self._turns[turn] = EntropyHistory(self.mode, self.window, self.decay)
            self._turns[turn].update(value)
        self._num_updates += 1

    def reference_at(self, turn_index: int, fallback: float | None = None) -> float | None:
        """H̄_ref for one turn index (rules for unseen indices in the class docstring)."""
        known = self._turns.get(turn_index)
        if known is not None:
            return known.reference
        if fallback is not None:
            return float(fallback)
        if not self._turns:
            return None
        lower = [t for t in self._turns if t < turn_index]
        nearest = max(lower) if lower else min(self._turns)
        return self._turns[nearest].reference

    def reference_for(
        self, turn_index: torch.Tensor, fallback: float | None = None
    ) -> torch.Tensor | None:
        """Per-token reference for ``smoothing_penalty``.

        Args:
            turn_index: LongTensor ``[R, L]`` from ``turn_index_in_trajectory`` (-1 off-response).
            fallback: reference for turn indices never recorded (see class docstring).

        Returns:
            float32 ``[R, L]`` on ``turn_index``'s device, with 0 on positions whose index is -1
            (non-response tokens, which Eq. 2's weights drop); None before the first update
            and with no fallback, meaning no reference yet (smoothing off at k = 0).
        """
        max_turn = int(turn_index.max()) if turn_index.numel() else -1
        table = self.references_by_turn(max_turn, fallback)
        if table is None:
            return None
        return torch.nan_to_num(reference_per_token(table, turn_index), nan=0.0)

    def references_by_turn(self, max_turn: int, fallback: float | None = None) -> list[float] | None:
        """``[H̄_ref(0), ..., H̄_ref(max_turn)]``, one per turn index (``reference_at``); None before
        the first update and with no fallback, meaning no reference yet."""
        if not self._turns and fallback is None:
            return None
        return [float(self.reference_at(t, fallback)) for t in range(max_turn + 1)]

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (turn indices as string keys, as JSON requires)."""
        return {
            "mode": self.mode,
            "window": self.window,
            "decay": self.decay,
            "num_updates": self._num_updates,
            "turns": {str(t): h.state_dict() for t, h in sorted(self._turns.items())},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``; the settings must match this object's."""
        settings = (state.get("mode"), state.get("window"), state.get("decay"))
        if settings != (self.mode, self.window, self.decay):
            raise ValueError(
                f"saved per-turn history settings (mode, window, decay) = {settings} differ "
                f"from the configured ones {(self.mode, self.window, self.decay)}"
            )
        turns: dict[int, EntropyHistory] = {}
        for key, sub in state["turns"].items():
            history = EntropyHistory(self.mode, self.window, self.decay)
            history.load_state_dict(sub)
            turns[int(key)] = history
        self._turns = turns
        self._num_updates = int(state["num_updates"])


def reference_per_token(reference: float | Sequence[float] | None, turn_index: torch.Tensor) -> torch.Tensor:
    """The smoothing reference H̄_ref (Eq. 3) of every token.

    Args:
        reference: None (no reference yet, step k = 0), one float (every position), or one float
            per turn index (``PerTurnEntropyHistory.references_by_turn``: entry t for the tokens of
            turn t).
        turn_index: long ``[R, L]`` turn index of each token in its trajectory, -1 off-response.

    Returns:
        float32 ``[R, L]`` on ``turn_index``'s device: NaN where there is no reference (all of it
        for None; off-response positions for a per-turn list).
    """
    if reference is None:
        return torch.full(turn_index.shape, math.nan, dtype=torch.float32, device=turn_index.device)
    if isinstance(reference, int | float):
        return torch.full(turn_index.shape, float(reference), dtype=torch.float32, device=turn_index.device)
    table = torch.tensor([float(r) for r in reference] + [math.nan], dtype=torch.float32, device=turn_index.device)
    if turn_index.numel() and int(turn_index.max()) >= len(reference):
        raise ValueError(
            f"a token has turn index {int(turn_index.max())} but the reference covers turn indices "
            f"0..{len(reference) - 1}; give one value per turn index of the batch"
        )
    # -1 (off-response) picks the trailing NaN
    return table[torch.where(turn_index >= 0, turn_index, len(reference))]

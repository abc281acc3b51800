"""verl's v1 row keys ``{uid}_{session}_{index}``: the one place they are parsed.

On verl's v1 agent-loop path every row of a training batch is one output of an agent loop, keyed
``{uid}_{session}_{index}`` (``trainer/ppo/v1/agent_loop_tq.py``): ``uid`` names the prompt (it may
contain underscores), ``session`` is the rollout of that prompt (0..n-1; a GRPO group shares the
uid), ``index`` orders the outputs of one session (one output per turn, or a single output for a
whole conversation). verl's synthetic padding rows follow the same form (``pad<hex>_{i}_0``).

``BatchTurns`` is a batch's trajectory and turn structure, built once per training step from the
keys and ``response_mask`` and passed to everything that needs it (Eq. 2 weights, turn indices,
metrics, advantage balancing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from verl_epo.algorithm import TurnStructure, turn_ids_from_mask

_ROW_INDEX_STRIDE = 1 << 20
"""Turn labels are output index * stride + run index, so turns stay distinct across rows."""


class RowKeyError(ValueError):
    """A batch row key is not ``{uid}_{session}_{index}``."""


@dataclass(frozen=True, order=True)
class RowKey:
    """One parsed row key; orders as (uid, session, index)."""

    uid: str
    session: int
    index: int

    @property
    def trajectory(self) -> str:
        """``{uid}_{session}``: the rows of one trajectory (one rollout of one prompt)."""
        return f"{self.uid}_{self.session}"


def parse_row_key(key: str) -> RowKey:
    """Parse ``{uid}_{session}_{index}``; raise ``RowKeyError`` for any other form."""
    parts = str(key).rsplit("_", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit():
        raise RowKeyError(
            f"batch row key {key!r} is not '{{uid}}_{{session}}_{{index}}' (verl's v1 agent-loop path, "
            "trainer.use_v1=true): the EPO trainer reads trajectories and turns from these keys"
        )
    return RowKey(parts[0], int(parts[1]), int(parts[2]))


@dataclass(frozen=True)
class BatchTurns:
    """Trajectory and turn structure of one batch of R rows, L token positions.

    A trajectory is ``{uid}_{session}``; its turns are ordered by the output index of their row,
    then by the run of ``response_mask`` inside the row, so one row per turn and one row per
    conversation give the same structure.
    """

    rows: tuple[RowKey, ...]
    """R parsed row keys."""
    traj_ids: list[str]
    """R trajectory ids ``{uid}_{session}``."""
    turn_ids: torch.Tensor
    """long [R, L]: equal labels within one trajectory are one turn; -1 off-response."""
    structure: TurnStructure
    """The Eq. 2 turn structure (``verl_epo.algorithm.TurnStructure``)."""
    turn_index: torch.Tensor
    """long [R, L]: 0-based turn index of each token in its trajectory; -1 off-response."""

    @classmethod
    def from_keys(cls, keys: Sequence[str], response_mask: torch.Tensor) -> BatchTurns:
        """Args: keys: R row keys; response_mask: (R, L) 1 on tokens the policy wrote."""
        rows = tuple(parse_row_key(key) for key in keys)
        traj_ids = [row.trajectory for row in rows]
        runs = turn_ids_from_mask(response_mask)
        index = torch.tensor([row.index for row in rows], dtype=torch.long, device=runs.device)
        turn_ids = torch.where(runs >= 0, runs + index[:, None] * _ROW_INDEX_STRIDE, runs)
        structure = TurnStructure.build(response_mask, traj_ids, turn_ids)
        return cls(rows, traj_ids, turn_ids, structure, structure.turn_index())

    def turn_offsets(self) -> torch.Tensor:
        """long [R]: turn index (in its trajectory) of each row's first turn; 0 for an empty row.

        A token's turn index is its row's offset plus the run of ``response_mask`` it lies in
        (``token_turn_index``), so a micro-batch that holds only some of a trajectory's rows can
        rebuild it.
        """
        has_response = self.turn_index >= 0
        first = torch.where(has_response.any(dim=1), has_response.int().argmax(dim=1), 0)
        offsets = self.turn_index.gather(1, first[:, None]).squeeze(1)
        return offsets.clamp(min=0)

    def last_rows(self, active: Sequence[bool]) -> dict[str, int]:
        """``{trajectory: row}`` of each trajectory's last output (highest index) among active rows."""
        last: dict[str, int] = {}
        for row, (key, on) in enumerate(zip(self.rows, active, strict=True)):
            if on and (key.trajectory not in last or self.rows[last[key.trajectory]].index < key.index):
                last[key.trajectory] = row
        return last


def token_turn_index(response_mask: torch.Tensor, turn_offsets: torch.Tensor) -> torch.Tensor:
    """Each token's turn index in its trajectory from its row's offset (``BatchTurns.turn_offsets``).

    Args:
        response_mask: (R, L) 1 on response tokens.
        turn_offsets: (R,) or (R, 1) turn index of each row's first turn.

    Returns:
        long (R, L): offset + run index inside the row on response tokens, -1 elsewhere.
    """
    runs = turn_ids_from_mask(response_mask)
    offsets = turn_offsets.reshape(-1, 1).to(device=runs.device, dtype=torch.long)
    return torch.where(runs >= 0, runs + offsets, runs)

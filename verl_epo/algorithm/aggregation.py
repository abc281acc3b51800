"""Trajectory-level aggregation of per-token quantities (EPO paper, Eq. 2).

    L = (1/B) Σ_n (1/T_n) Σ_t (1/|τ_{n,t}|) Σ_i x_{n,t,i}

Token mean inside a turn, mean over the turns of a trajectory, mean over the trajectories of the
batch. The same aggregation serves the entropy term L_H, the smoothing term L_smooth and the
metrics, so it lives here once.

Batch layout. A batch is ``R`` rows of ``L`` token positions with a ``response_mask[R, L]`` that
is 1 on tokens the policy wrote. ``traj_ids[R]`` says which trajectory each row belongs to, so
both layouts verl produces are covered: one row per turn (rows share a trajectory id) and one row
per conversation (a row holds several response runs separated by environment text).

Split invariance. Eq. 2 is not a plain token mean, so a mini/micro-batch cannot compute its share
from its own rows. ``trajectory_token_weights`` computes, once on the whole batch, the weight of
every token in Eq. 2; any split of the rows then reproduces the full-batch value exactly (up to
float summation order) as the sum over its parts of ``(values * weights).sum()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "TurnStructure",
    "turn_ids_from_mask",
    "trajectory_token_weights",
    "trajectory_mean",
    "turn_index_in_trajectory",
    "turn_index_means",
]


def _check_mask(response_mask: torch.Tensor) -> torch.Tensor:
    """Validate ``response_mask[R, L]`` (0/1 values, any dtype) and return it as bool."""
    if not isinstance(response_mask, torch.Tensor) or response_mask.dim() != 2:
        shape = tuple(response_mask.shape) if isinstance(response_mask, torch.Tensor) else None
        raise ValueError(
            f"response_mask must be a 2-D tensor [rows, tokens], got {type(response_mask).__name__}"
            f" with shape {shape}; pass verl's batch['response_mask']"
        )
    if response_mask.dtype == torch.bool:
        return response_mask
    if not bool(((response_mask == 0) | (response_mask == 1)).all()):
        raise ValueError(
            "response_mask must contain only 0 and 1 (1 = token written by the policy); "
            "got other values"
        )
    return response_mask != 0


def turn_ids_from_mask(response_mask: torch.Tensor) -> torch.Tensor:
    """Number the turns of each row: each maximal run of ``response_mask == 1`` is one turn.

    Args:
        response_mask: ``[R, L]``, 1 on response tokens, 0 elsewhere.

    Returns:
        LongTensor ``[R, L]``: on response tokens the turn's 0-based index within its row
        (0 for the first run of ones, 1 for the second, ...); -1 on non-response tokens.
    """
    response = _check_mask(response_mask)
    previous = torch.zeros_like(response)
    previous[:, 1:] = response[:, :-1]
    # a turn starts where a response token follows a non-response token (or the row start)
    starts = response & ~previous
    run_index = torch.cumsum(starts.long(), dim=1) - 1
    return torch.where(response, run_index, torch.full_like(run_index, -1))


def _dense_trajectory_index(traj_ids: Any, num_rows: int, device: torch.device) -> torch.Tensor:
    """Map trajectory ids (tensor, numpy array or sequence of hashables) to 0..B'-1 per row."""
    if isinstance(traj_ids, torch.Tensor):
        if traj_ids.dim() != 1 or traj_ids.dtype.is_floating_point or traj_ids.is_complex():
            raise ValueError(
                f"traj_ids as a tensor must be a 1-D integer tensor [rows], got dtype "
                f"{traj_ids.dtype} and shape {tuple(traj_ids.shape)}"
            )
        if traj_ids.numel() != num_rows:
            raise ValueError(
                f"traj_ids has {traj_ids.numel()} entries but the batch has {num_rows} rows; "
                "give one trajectory id per row"
            )
        return torch.unique(traj_ids.to(device), return_inverse=True)[1].long()
    try:
        ids: Sequence[Any] = list(traj_ids)
    except TypeError as err:
        raise ValueError(
            f"traj_ids must be a 1-D tensor or a sequence of ids, got {type(traj_ids).__name__}"
        ) from err
    if len(ids) != num_rows:
        raise ValueError(
            f"traj_ids has {len(ids)} entries but the batch has {num_rows} rows; "
            "give one trajectory id per row"
        )
    index: dict[Any, int] = {}
    try:
        dense = [index.setdefault(i, len(index)) for i in ids]
    except TypeError as err:
        raise ValueError(
            "traj_ids entries must be hashable scalars (ints or strings such as verl's 'uid'); "
            "got a nested or unhashable entry"
        ) from err
    return torch.tensor(dense, dtype=torch.long, device=device)


@dataclass(frozen=True)
class TurnStructure:
    """Where every response token of a batch sits: its turn, the turn's trajectory and the sizes.

    Built once per batch (``TurnStructure.build``) and then asked for Eq. 2's weights, means and
    turn indices, so a training step does not rebuild it for each quantity. Turns are numbered
    0..num_turns-1 in an order that, inside one trajectory, follows batch row order then position
    (or the explicit turn label when ``turn_ids`` is given).
    """

    response: torch.Tensor
    """bool [R, L]: response tokens."""
    token_turn: torch.Tensor
    """long [N]: turn of each response token, row-major order."""
    turn_traj: torch.Tensor
    """long [num_turns]: trajectory of each turn."""
    turn_size: torch.Tensor
    """long [num_turns]: response tokens in each turn."""
    turns_per_traj: torch.Tensor
    """long [num_traj]: non-empty turns per trajectory."""

    @classmethod
    def build(
        cls, response_mask: torch.Tensor, traj_ids: Any, turn_ids: torch.Tensor | None = None
    ) -> TurnStructure:
        """The structure of a batch (arguments as in ``trajectory_token_weights``)."""
        response = _check_mask(response_mask)
        num_rows, num_tokens = response.shape
        device = response.device
        traj = _dense_trajectory_index(traj_ids, num_rows, device)
        num_traj = int(traj.max()) + 1 if num_rows else 0
        token_traj = traj[:, None].expand(num_rows, num_tokens)[response]

        if turn_ids is None:
            # a turn is (row, run): rows are numbered in batch order, so the key keeps that order
            runs = turn_ids_from_mask(response)
            rows = torch.arange(num_rows, device=device)[:, None].expand(num_rows, num_tokens)
            token_key = rows[response] * num_tokens + runs[response]
        else:
            if not isinstance(turn_ids, torch.Tensor) or turn_ids.shape != response.shape:
                raise ValueError(
                    f"turn_ids must be a tensor shaped like response_mask {tuple(response.shape)}, "
                    f"got {getattr(turn_ids, 'shape', type(turn_ids).__name__)}"
                )
            if turn_ids.dtype.is_floating_point or turn_ids.dtype == torch.bool:
                raise ValueError(f"turn_ids must be an integer tensor, got dtype {turn_ids.dtype}")
            labels = turn_ids.to(device).long()[response]
            if labels.numel() and int(labels.min()) < 0:
                raise ValueError(
                    "turn_ids must be >= 0 on response tokens (negative labels are reserved for "
                    "non-response tokens)"
                )
            # a turn is (trajectory, label): labels may span several rows of one trajectory
            span = int(labels.max()) + 1 if labels.numel() else 1
            token_key = token_traj * span + labels

        if token_key.numel() == 0:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return cls(response, empty, empty, empty, torch.zeros(num_traj, dtype=torch.long, device=device))
        _, token_turn, turn_size = torch.unique(token_key, return_inverse=True, return_counts=True)
        turn_traj = torch.zeros(turn_size.numel(), dtype=torch.long, device=device)
        turn_traj.scatter_(0, token_turn, token_traj)
        turns_per_traj = torch.bincount(turn_traj, minlength=num_traj)
        return cls(response, token_turn, turn_traj, turn_size, turns_per_traj)

    def token_weights(self) -> torch.Tensor:
        """float32 ``[R, L]``: Eq. 2 weight of every token (see ``trajectory_token_weights``)."""
        weights = torch.zeros(self.response.shape, dtype=torch.float64, device=self.response.device)
        if self.token_turn.numel() == 0:
            return weights.float()
        num_active = (self.turns_per_traj > 0).sum().double()
        token_traj = self.turn_traj[self.token_turn]
        token_weight = 1.0 / (
            num_active * self.turns_per_traj[token_traj].double() * self.turn_size[self.token_turn].double()
        )
        weights[self.response] = token_weight
        return weights.float()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """0-dim: Eq. 2 of ``values`` ``[R, L]`` (see ``trajectory_mean``), differentiable in ``values``."""
        _check_values(values, self.response)
        weights = self.token_weights().to(values.device)
        # masked positions may hold anything (even NaN padding): select instead of multiplying
        selected = torch.where(weights > 0, values, torch.zeros_like(values))
        return (selected * weights).sum()

    def trajectory_means(self, values: torch.Tensor) -> torch.Tensor:
        """float64 ``[T]``: each trajectory's Eq. 2 value of ``values`` ``[R, L]`` (token mean in each
        turn, then mean over its turns), for the T trajectories that have a response token, in
        trajectory order. Their mean is ``self.mean(values)``. No gradient."""
        _check_values(values, self.response)
        flat = values.detach()[self.response.to(values.device)].double().to(self.token_turn.device)
        turn_sum = torch.zeros(self.turn_size.numel(), dtype=torch.float64, device=flat.device)
        turn_sum.index_add_(0, self.token_turn, flat)
        traj_sum = torch.zeros(self.turns_per_traj.numel(), dtype=torch.float64, device=flat.device)
        traj_sum.index_add_(0, self.turn_traj, turn_sum / self.turn_size.double())
        active = self.turns_per_traj > 0
        return traj_sum[active] / self.turns_per_traj[active].double()

    def turn_index(self) -> torch.Tensor:
        """long ``[R, L]``: each token's turn index in its trajectory, -1 off-response
        (see ``turn_index_in_trajectory``)."""
        response = self.response
        result = torch.full(response.shape, -1, dtype=torch.long, device=response.device)
        num_turns = self.turn_size.numel()
        if num_turns == 0:
            return result
        # turns are already key-sorted; a stable sort by trajectory keeps that order inside a group
        order = torch.sort(self.turn_traj, stable=True).indices
        group_start = torch.cumsum(self.turns_per_traj, 0) - self.turns_per_traj
        position_sorted = torch.arange(num_turns, device=response.device) - group_start[self.turn_traj[order]]
        turn_position = torch.empty_like(position_sorted)
        turn_position[order] = position_sorted
        result[response] = turn_position[self.token_turn]
        return result

    def turn_index_means(self, values: torch.Tensor, turn_index: torch.Tensor | None = None) -> dict[int, float]:
        """``{turn_index: token mean of values}`` (see ``turn_index_means``); ``turn_index`` is
        ``self.turn_index()``, passed in when the caller already has it."""
        _check_values(values, self.response)
        index = self.turn_index() if turn_index is None else turn_index
        on = index >= 0
        if not bool(on.any()):
            return {}
        flat_index = index[on]
        flat_values = values.detach()[on.to(values.device)].double().to(flat_index.device)
        count = torch.bincount(flat_index)
        total = torch.zeros(count.numel(), dtype=torch.float64, device=flat_index.device)
        total.index_add_(0, flat_index, flat_values)
        return {t: float(total[t] / count[t]) for t in range(count.numel()) if int(count[t]) > 0}


def _check_values(values: torch.Tensor, response_mask: torch.Tensor) -> None:
    if not isinstance(values, torch.Tensor) or values.shape != response_mask.shape:
        raise ValueError(
            f"values must be a tensor shaped like response_mask {tuple(response_mask.shape)}, "
            f"got {getattr(values, 'shape', type(values).__name__)}"
        )


def trajectory_token_weights(
    response_mask: torch.Tensor, traj_ids: Any, turn_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Weight of every token in Eq. 2's aggregation over this (whole, global) batch.

    ``w_{n,t,i} = 1 / (B · T_n · |τ_{n,t}|)`` on response tokens, 0 elsewhere, where B counts the
    trajectories with at least one response token, T_n the non-empty turns of trajectory n and
    |τ_{n,t}| the response tokens of turn t. Then ``(values * w).sum()`` is Eq. 2 for any
    per-token ``values``, and because the weights are fixed by the whole batch, summing
    ``(values[part] * w[part]).sum()`` over any split of the rows gives the same number.

    Args:
        response_mask: ``[R, L]``, 1 on response tokens, 0 elsewhere (bool, int or float).
        traj_ids: ``[R]`` trajectory id of each row: a 1-D integer tensor or any sequence of
            hashable ids (e.g. a numpy array of verl ``uid`` strings). Rows sharing an id form
            one trajectory, taken in batch order.
        turn_ids: optional LongTensor ``[R, L]`` of explicit turn labels. If None, a turn is
            one maximal run of response tokens inside a row (``turn_ids_from_mask``). If given,
            a turn is (trajectory, label): response tokens of one trajectory with the same label
            form one turn even across rows. Labels must be >= 0 on response tokens.

    Returns:
        float32 ``[R, L]`` on ``response_mask``'s device; sums to 1 when the batch has any
        response token, all zeros otherwise. Rows or turns without response tokens get weight
        0 and do not count in B or T_n.
    """
    return TurnStructure.build(response_mask, traj_ids, turn_ids).token_weights()


def trajectory_mean(
    values: torch.Tensor, response_mask: torch.Tensor, traj_ids: Any, turn_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. 2: ``(1/B) Σ_n (1/T_n) Σ_t (1/|τ_{n,t}|) Σ_i values_{n,t,i}``.

    Token mean inside each turn, mean over the turns of a trajectory, mean over trajectories.
    A long turn does not outweigh a short one, nor a long trajectory a short one. The value is
    the same for a row-per-turn and a row-per-conversation layout of the same data.

    Args:
        values: ``[R, L]`` per-token quantity (e.g. entropy H or smoothing penalty P).
        response_mask, traj_ids, turn_ids: as in ``trajectory_token_weights``.

    Returns:
        0-dim tensor, differentiable in ``values``; 0 when the batch has no response token.
        To get one part's share of a larger batch, use the full batch's
        ``trajectory_token_weights`` instead (this function computes weights from its input).
    """
    _check_values(values, response_mask)
    return TurnStructure.build(response_mask, traj_ids, turn_ids).mean(values)


def turn_index_in_trajectory(
    response_mask: torch.Tensor, traj_ids: Any, turn_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """0-based index of each token's turn within its trajectory (for per-turn metrics, Eq. 3).

    Turns are counted as in ``trajectory_token_weights``: with ``turn_ids`` None, in batch row
    order and then position within a row; with explicit ``turn_ids``, in ascending label order
    (labels need not be contiguous: labels {0, 2, 5} become indices {0, 1, 2}).

    Args:
        response_mask: ``[R, L]``; traj_ids: ``[R]``; turn_ids: optional ``[R, L]``.

    Returns:
        LongTensor ``[R, L]``: the turn index on response tokens, -1 elsewhere.
    """
    return TurnStructure.build(response_mask, traj_ids, turn_ids).turn_index()


def turn_index_means(
    values: torch.Tensor,
    response_mask: torch.Tensor,
    traj_ids: Any,
    turn_ids: torch.Tensor | None = None,
) -> dict[int, float]:
    """Token mean of ``values`` over all response tokens at each turn index of the batch.

    The per-turn-index analogue of the batch-average entropy H̄_m (Eq. 3's reference input) and
    the source of per-turn-index entropy metrics: entry t averages every response token of turn t
    of every trajectory (turn index from ``turn_index_in_trajectory``).

    Args:
        values: ``[R, L]``; response_mask: ``[R, L]``; traj_ids: ``[R]``; turn_ids: ``[R, L]``.

    Returns:
        ``{turn_index: mean}`` for every turn index present in the batch (python floats).
    """
    _check_values(values, response_mask)
    return TurnStructure.build(response_mask, traj_ids, turn_ids).turn_index_means(values)

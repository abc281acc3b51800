"""Eq. 2 aggregation against hand-computed values, both batch layouts, and split invariance."""

from __future__ import annotations

import random
from fractions import Fraction

import numpy as np
import pytest
import torch

from verl_epo.algorithm import (
    trajectory_mean,
    trajectory_token_weights,
    turn_ids_from_mask,
    turn_index_in_trajectory,
    turn_index_means,
)

X = 99.0  # filler on non-response positions: must never reach the result

# Row per conversation, L = 10. Four trajectories:
#   a: turns [1, 3] and [2, 4, 6]        -> turn means 2, 4        -> trajectory mean 3
#   b: turns [6], [1, 2, 3, 6], [3]      -> turn means 6, 3, 3     -> trajectory mean 4
#   c: one turn of eight 7s              -> turn mean 7            -> trajectory mean 7
#   d: no response token                 -> not counted
# Eq. 2 = (3 + 4 + 7) / 3 = 14 / 3. (A plain token mean would be 93 / 19 ≈ 4.89.)
CONV_MASK = torch.tensor(
    [
        [1, 1, 0, 1, 1, 1, 0, 0, 0, 0],
        [1, 0, 1, 1, 1, 1, 0, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 1, 1, 1, 1],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ]
)
CONV_VALUES = torch.tensor(
    [
        [1, 3, X, 2, 4, 6, X, X, X, X],
        [6, X, 1, 2, 3, 6, X, 3, X, X],
        [X, X, 7, 7, 7, 7, 7, 7, 7, 7],
        [X, X, X, X, X, X, X, X, X, X],
    ],
    dtype=torch.float64,
)
CONV_IDS = np.array(["a", "b", "c", "d"], dtype=object)

# The same data one row per turn, L = 8, rows interleaved, padding on either side, plus an
# all-zero row for trajectory "a" (an empty turn: must not raise a's turn count to 3).
TURN_MASK = torch.tensor(
    [
        [0, 0, 0, 0, 0, 0, 0, 1],  # b, turn 0: [6]
        [1, 1, 0, 0, 0, 0, 0, 0],  # a, turn 0: [1, 3]
        [1, 1, 1, 1, 1, 1, 1, 1],  # c, turn 0: eight 7s
        [0, 0, 0, 0, 1, 1, 1, 1],  # b, turn 1: [1, 2, 3, 6]
        [0, 0, 0, 0, 0, 0, 0, 0],  # d: empty
        [0, 0, 0, 0, 0, 1, 1, 1],  # a, turn 1: [2, 4, 6]
        [1, 0, 0, 0, 0, 0, 0, 0],  # b, turn 2: [3]
        [0, 0, 0, 0, 0, 0, 0, 0],  # a: empty row
    ]
)
TURN_VALUES = torch.tensor(
    [
        [X, X, X, X, X, X, X, 6],
        [1, 3, X, X, X, X, X, X],
        [7, 7, 7, 7, 7, 7, 7, 7],
        [X, X, X, X, 1, 2, 3, 6],
        [X, X, X, X, X, X, X, X],
        [X, X, X, X, X, 2, 4, 6],
        [3, X, X, X, X, X, X, X],
        [X, X, X, X, X, X, X, X],
    ],
    dtype=torch.float64,
)
TURN_IDS = np.array(["b", "a", "c", "b", "d", "a", "b", "a"], dtype=object)


def test_turn_ids_from_mask_numbers_runs_per_row() -> None:
    expected = torch.tensor(
        [
            [0, 0, -1, 1, 1, 1, -1, -1, -1, -1],
            [0, -1, 1, 1, 1, 1, -1, 2, -1, -1],
            [-1, -1, 0, 0, 0, 0, 0, 0, 0, 0],
            [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
        ]
    )
    assert torch.equal(turn_ids_from_mask(CONV_MASK), expected)
    assert torch.equal(turn_ids_from_mask(CONV_MASK.bool()), expected)
    assert torch.equal(turn_ids_from_mask(CONV_MASK.float()), expected)


def test_eq2_row_per_conversation_hand_value() -> None:
    result = trajectory_mean(CONV_VALUES, CONV_MASK, CONV_IDS)
    assert result.item() == pytest.approx(14 / 3, abs=1e-6)


def test_eq2_row_per_turn_layout_gives_the_same_value() -> None:
    result = trajectory_mean(TURN_VALUES, TURN_MASK, TURN_IDS)
    assert result.item() == pytest.approx(14 / 3, abs=1e-6)
    conv = trajectory_mean(CONV_VALUES, CONV_MASK, CONV_IDS)
    assert result.item() == pytest.approx(conv.item(), abs=1e-6)


def test_token_weights_hand_values() -> None:
    # B = 3 active trajectories; w = 1 / (B · T_n · |τ|), written here in 72nds:
    #   a turn 0: 1/(3·2·2) = 6/72,  a turn 1: 1/(3·2·3) = 4/72
    #   b turns 0 and 2: 1/(3·3·1) = 8/72,  b turn 1: 1/(3·3·4) = 2/72
    #   c: 1/(3·1·8) = 3/72;  d and non-response tokens: 0
    expected = (
        torch.tensor(
            [
                [6, 6, 0, 4, 4, 4, 0, 0, 0, 0],
                [8, 0, 2, 2, 2, 2, 0, 8, 0, 0],
                [0, 0, 3, 3, 3, 3, 3, 3, 3, 3],
                [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ],
            dtype=torch.float32,
        )
        / 72
    )
    weights = trajectory_token_weights(CONV_MASK, CONV_IDS)
    assert weights.dtype == torch.float32
    assert torch.allclose(weights, expected, atol=1e-7)
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_integer_tensor_and_list_ids_match_string_ids() -> None:
    expected = trajectory_token_weights(CONV_MASK, CONV_IDS)
    as_tensor = trajectory_token_weights(CONV_MASK, torch.tensor([40, 7, 12, 3]))
    as_list = trajectory_token_weights(CONV_MASK, ["x", "y", "z", "w"])
    assert torch.equal(as_tensor, expected)
    assert torch.equal(as_list, expected)


def test_shared_ids_merge_rows_into_one_trajectory() -> None:
    # rows a and b under one id: one trajectory of 5 turns with means 2, 4, 6, 3, 3
    # -> 18/5; with c: (18/5 + 7) / 2 = 5.3
    ids = np.array(["ab", "ab", "c", "d"], dtype=object)
    result = trajectory_mean(CONV_VALUES, CONV_MASK, ids)
    assert result.item() == pytest.approx(5.3, abs=1e-6)


def test_empty_turns_and_rows_are_not_counted() -> None:
    # dropping the all-zero rows (d, and a's empty row) changes nothing
    keep = [0, 1, 2, 3, 5, 6]
    reduced = trajectory_mean(TURN_VALUES[keep], TURN_MASK[keep], TURN_IDS[keep])
    assert reduced.item() == pytest.approx(14 / 3, abs=1e-6)
    empty = torch.zeros(3, 5)
    assert trajectory_mean(torch.ones(3, 5), empty, [0, 1, 2]).item() == 0.0
    assert torch.equal(trajectory_token_weights(empty, [0, 1, 2]), torch.zeros(3, 5))


def test_non_response_values_may_be_nan() -> None:
    values = CONV_VALUES.clone()
    values[CONV_MASK == 0] = float("nan")
    result = trajectory_mean(values, CONV_MASK, CONV_IDS)
    assert result.item() == pytest.approx(14 / 3, abs=1e-6)


def test_explicit_turn_ids_join_rows_of_one_turn() -> None:
    # trajectory a: label 0 -> [1, 3]; label 1 spans two rows -> [2, 4] and [6]
    #   with labels: turn means 2 and (2+4+6)/3 = 4 -> 3
    #   without labels each row is a turn: 2, 3, 6 -> 11/3
    mask = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 0, 0]])
    values = torch.tensor([[1.0, 3.0, X], [2.0, 4.0, X], [6.0, X, X]])
    labels = torch.tensor([[0, 0, -1], [1, 1, -1], [1, -1, -1]])
    ids = ["a", "a", "a"]
    assert trajectory_mean(values, mask, ids, labels).item() == pytest.approx(3.0)
    assert trajectory_mean(values, mask, ids).item() == pytest.approx(11 / 3)


def test_turn_index_in_trajectory_row_per_turn() -> None:
    # rows of a trajectory count in batch order: b rows 0, 3, 6 -> 0, 1, 2; a rows 1, 5 -> 0, 1
    index = turn_index_in_trajectory(TURN_MASK, TURN_IDS)
    per_row = [
        int(r[m.bool()].unique().item()) if m.any() else -1
        for r, m in zip(index, TURN_MASK, strict=True)
    ]
    assert per_row == [0, 0, 0, 1, -1, 1, 2, -1]
    assert torch.equal(index[TURN_MASK == 0], torch.full(((TURN_MASK == 0).sum(),), -1))


def test_turn_index_in_trajectory_conversation_and_labels() -> None:
    index = turn_index_in_trajectory(CONV_MASK, CONV_IDS)
    assert torch.equal(index, turn_ids_from_mask(CONV_MASK))
    # explicit labels {0, 2, 5} of one trajectory become indices {0, 1, 2}
    mask = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0]])
    labels = torch.tensor([[5, -1, 0, 0], [-1, 2, 2, -1]])
    expected = torch.tensor([[2, -1, 0, 0], [-1, 1, 1, -1]])
    assert torch.equal(turn_index_in_trajectory(mask, [9, 9], labels), expected)


def test_turn_index_means_hand_values() -> None:
    # turn 0 tokens: a [1, 3], b [6], c eight 7s -> (4 + 6 + 56) / 11 = 6
    # turn 1 tokens: a [2, 4, 6], b [1, 2, 3, 6] -> 24 / 7;  turn 2: b [3] -> 3
    means = turn_index_means(CONV_VALUES, CONV_MASK, CONV_IDS)
    assert means.keys() == {0, 1, 2}
    assert means[0] == pytest.approx(6.0)
    assert means[1] == pytest.approx(24 / 7)
    assert means[2] == pytest.approx(3.0)
    assert turn_index_means(TURN_VALUES, TURN_MASK, TURN_IDS) == pytest.approx(means)


def _random_episodes(rng: random.Random, count: int) -> list[list[list[float]]]:
    """Trajectories as lists of turns, each a list of token values; trajectory 2 is empty."""
    episodes = []
    for n in range(count):
        turns = 0 if n == 2 else rng.randint(1, 5)
        episodes.append(
            [[rng.uniform(-2, 3) for _ in range(rng.randint(1, 6))] for _ in range(turns)]
        )
    return episodes


def _exact_eq2(episodes: list[list[list[float]]]) -> float:
    active = [e for e in episodes if e]
    total = sum(sum(Fraction(sum(map(Fraction, t))) / len(t) for t in e) / len(e) for e in active)
    return float(total / len(active))


def _layout_per_conversation(episodes):
    length = max(sum(len(t) + 2 for t in e) for e in episodes)
    mask = torch.zeros(len(episodes), length, dtype=torch.long)
    values = torch.full((len(episodes), length), X, dtype=torch.float64)
    for row, episode in enumerate(episodes):
        pos = 1  # one prompt token, then two environment tokens between turns
        for turn in episode:
            mask[row, pos : pos + len(turn)] = 1
            values[row, pos : pos + len(turn)] = torch.tensor(turn, dtype=torch.float64)
            pos += len(turn) + 2
    return values, mask, [f"uid-{n}" for n in range(len(episodes))]


def _layout_per_turn(episodes, rng):
    rows = [(n, turn) for n, e in enumerate(episodes) for turn in e] + [(2, [])]
    rng.shuffle(rows)  # Eq. 2 is a mean over turns: their order within a trajectory is free
    length = 8
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    values = torch.full((len(rows), length), X, dtype=torch.float64)
    ids = []
    for row, (n, turn) in enumerate(rows):
        start = rng.randint(0, length - len(turn))
        mask[row, start : start + len(turn)] = 1
        values[row, start : start + len(turn)] = torch.tensor(turn, dtype=torch.float64)
        ids.append(f"uid-{n}")
    return values, mask, ids


def test_random_batches_match_exact_arithmetic_in_both_layouts() -> None:
    rng = random.Random(0)
    for _ in range(5):
        episodes = _random_episodes(rng, 6)
        expected = _exact_eq2(episodes)
        values, mask, ids = _layout_per_conversation(episodes)
        assert trajectory_mean(values, mask, ids).item() == pytest.approx(expected, abs=1e-6)
        values, mask, ids = _layout_per_turn(episodes, rng)
        assert trajectory_mean(values, mask, ids).item() == pytest.approx(expected, abs=1e-6)


def test_split_invariance_of_weighted_sum() -> None:
    generator = torch.Generator().manual_seed(1)
    rows, length = 12, 16
    mask = (torch.rand(rows, length, generator=generator) < 0.6).long()
    mask[4] = 0  # an all-zero row
    values = torch.randn(rows, length, generator=generator, dtype=torch.float64)
    ids = np.array([f"traj-{i}" for i in [0, 1, 1, 2, 3, 3, 3, 0, 4, 2, 1, 4]], dtype=object)

    full = trajectory_mean(values, mask, ids)
    weights = trajectory_token_weights(mask, ids)  # computed once, on the whole batch
    permutation = torch.randperm(rows, generator=generator).tolist()
    splits = [
        [list(range(0, 4)), list(range(4, 8)), list(range(8, 12))],
        [[0], list(range(1, 6)), list(range(6, 12))],
        [permutation[:3], permutation[3:5], permutation[5:]],
        [[r] for r in range(rows)],
    ]
    for split in splits:
        assert sorted(r for part in split for r in part) == list(range(rows))
        total = sum((values[part] * weights[part]).sum() for part in split)
        assert total.item() == pytest.approx(full.item(), abs=1e-6)
        # the split-local Eq. 2 averaged over parts is NOT the same: the global weights matter
        local = sum(trajectory_mean(values[p], mask[p], ids[p]) for p in split) / len(split)
        assert abs(local.item() - full.item()) > 1e-3


def test_gradient_flows_to_response_tokens_only() -> None:
    values = CONV_VALUES.clone().requires_grad_(True)
    trajectory_mean(values, CONV_MASK, CONV_IDS).backward()
    expected = trajectory_token_weights(CONV_MASK, CONV_IDS).double()
    assert torch.allclose(values.grad, expected)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: trajectory_mean(CONV_VALUES, CONV_MASK * 2, CONV_IDS), "only 0 and 1"),
        (lambda: trajectory_mean(CONV_VALUES, CONV_MASK, CONV_IDS[:3]), "one trajectory id"),
        (lambda: trajectory_mean(CONV_VALUES[:, :5], CONV_MASK, CONV_IDS), "values must"),
        (lambda: trajectory_token_weights(CONV_MASK[0], CONV_IDS), "2-D"),
        (lambda: trajectory_token_weights(CONV_MASK, torch.ones(4)), "integer tensor"),
        (
            lambda: trajectory_token_weights(CONV_MASK, CONV_IDS, torch.full((4, 10), -1)),
            ">= 0 on response tokens",
        ),
        (
            lambda: trajectory_token_weights(CONV_MASK, CONV_IDS, torch.zeros(4, 3).long()),
            "shaped like response_mask",
        ),
    ],
)
def test_bad_input_names_the_problem(call, match) -> None:
    with pytest.raises(ValueError, match=match):
        call()

"""Entropy history (Eq. 3's reference): modes, exclusion of the current step, JSON resume."""

from __future__ import annotations

import json

import pytest
import torch

from verl_epo.algorithm import (
    EntropyHistory,
    PerTurnEntropyHistory,
    turn_index_in_trajectory,
    turn_index_means,
)

STEPS = [1.0, 2.0, 3.0, 6.0]  # H̄_0 .. H̄_3


def _references_used(history: EntropyHistory, means: list[float]) -> list[float | None]:
    """The trainer's order: read the reference for step k, train, then record H̄_k."""
    used = []
    for mean in means:
        used.append(history.reference)
        history.update(mean)
    return used


def test_cumulative_reference_excludes_the_current_step() -> None:
    # H̄_ref(k) = mean(H̄_0..H̄_{k-1}): None, 1, (1+2)/2 = 1.5, (1+2+3)/3 = 2; then 12/4 = 3
    history = EntropyHistory()
    assert history.reference is None and history.num_updates == 0
    assert _references_used(history, STEPS) == [None, 1.0, 1.5, 2.0]
    assert history.reference == 3.0
    assert history.num_updates == 4
    assert history.values == STEPS


def test_window_reference() -> None:
    # window 2: None, 1, (1+2)/2 = 1.5, (2+3)/2 = 2.5; then (3+6)/2 = 4.5
    history = EntropyHistory("window", window=2)
    assert _references_used(history, STEPS) == [None, 1.0, 1.5, 2.5]
    assert history.reference == 4.5


def test_ema_reference() -> None:
    # decay 0.5: r = 1; 0.5·1 + 0.5·2 = 1.5; 0.5·1.5 + 0.5·3 = 2.25; 0.5·2.25 + 0.5·6 = 4.125
    history = EntropyHistory("ema", decay=0.5)
    assert _references_used(history, STEPS) == [None, 1.0, 1.5, 2.25]
    assert history.reference == 4.125


def test_cumulative_mean_does_not_drift() -> None:
    # 0.1 summed 1000 times naively is 99.9999999999986; the mean must stay exactly 0.1
    history = EntropyHistory()
    for _ in range(1000):
        history.update(0.1)
    assert history.reference == 0.1


@pytest.mark.parametrize(
    "settings", [{}, {"mode": "window", "window": 3}, {"mode": "ema", "decay": 0.9}]
)
def test_json_round_trip_resumes_exactly(settings) -> None:
    original = EntropyHistory(**settings)
    for value in [1 / 3, 0.1, 2.718281828459045, 0.7, 1e-3]:
        original.update(value)
    text = json.dumps(original.state_dict())
    restored = EntropyHistory(**settings)
    restored.load_state_dict(json.loads(text))
    assert restored.reference == original.reference
    assert restored.num_updates == original.num_updates
    for value in [0.3, 1 / 7, 5.0]:
        original.update(value)
        restored.update(value)
        assert restored.reference == original.reference
    assert EntropyHistory.from_state_dict(json.loads(text)).state_dict() == json.loads(text)


def test_load_rejects_other_settings_and_bad_values() -> None:
    saved = EntropyHistory("window", window=3)
    saved.update(1.0)
    with pytest.raises(ValueError, match="differ from the configured"):
        EntropyHistory("window", window=4).load_state_dict(saved.state_dict())
    corrupt = saved.state_dict() | {"values": [1.0, float("nan")]}
    with pytest.raises(ValueError, match="finite"):
        EntropyHistory("window", window=3).load_state_dict(corrupt)
    with pytest.raises(ValueError, match="state_dict"):
        EntropyHistory().load_state_dict({"values": []})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "mean"}, "mode must be one of"),
        ({"mode": "window"}, "needs window"),
        ({"mode": "window", "window": 0}, "window must be an integer >= 1"),
        ({"mode": "window", "window": 2.5}, "window must be an integer >= 1"),
        ({"mode": "ema"}, "needs decay"),
        ({"mode": "ema", "decay": 1.0}, r"decay must be in \[0, 1\)"),
        ({"mode": "ema", "decay": -0.1}, r"decay must be in \[0, 1\)"),
    ],
)
def test_invalid_settings_name_the_argument(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        EntropyHistory(**kwargs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), "high"])
def test_update_rejects_non_finite(bad) -> None:
    history = EntropyHistory()
    with pytest.raises(ValueError, match="batch_mean"):
        history.update(bad)
    assert history.num_updates == 0


def test_update_accepts_a_scalar_tensor() -> None:
    history = EntropyHistory()
    history.update(torch.tensor(0.25))
    assert history.reference == 0.25


def test_per_turn_references_and_fallbacks() -> None:
    # turn 0: 1, 3 -> 2;  turn 1: 2, 4 -> 3;  turn 2: 5 (seen once)
    history = PerTurnEntropyHistory()
    assert history.reference_for(torch.tensor([[0, -1]])) is None  # no reference at k = 0
    history.update({0: 1.0, 1: 2.0})
    history.update({0: 3.0, 1: 4.0, 2: 5.0})
    assert history.num_updates == 2 and history.turn_indices == [0, 1, 2]
    index = torch.tensor([[0, 1, -1, 4], [2, -1, -1, -1]])
    # unseen turn 4 -> nearest lower recorded turn (2): 5; non-response (-1) -> 0
    expected = torch.tensor([[2.0, 3.0, 0.0, 5.0], [5.0, 0.0, 0.0, 0.0]])
    assert torch.equal(history.reference_for(index), expected)
    # with an explicit fallback (e.g. the global reference), unseen turns take it instead
    with_fallback = torch.tensor([[2.0, 3.0, 0.0, 0.7], [5.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(history.reference_for(index, fallback=0.7), with_fallback)
    # only higher turns recorded -> nearest higher one
    late = PerTurnEntropyHistory()
    late.update({3: 1.5})
    assert late.reference_at(1) == 1.5


def test_per_turn_history_fed_from_a_batch_and_json_round_trip() -> None:
    # one row per turn: trajectory a has turns with entropy means 1 and 3, b has 2 and 5 and 4
    mask = torch.tensor([[1, 1], [1, 0], [1, 1], [0, 1], [1, 0]])
    entropy = torch.tensor([[1.0, 1.0], [2.0, 9.0], [3.0, 3.0], [9.0, 5.0], [4.0, 9.0]])
    ids = ["a", "b", "a", "b", "b"]
    # turn 0: a [1, 1], b [2] -> 4/3;  turn 1: a [3, 3], b [5] -> 11/3;  turn 2: b [4] -> 4
    means = turn_index_means(entropy, mask, ids)
    assert means == pytest.approx({0: 4 / 3, 1: 11 / 3, 2: 4.0})
    history = PerTurnEntropyHistory("ema", decay=0.8)
    history.update(means)
    history.update({0: 1.0})
    restored = PerTurnEntropyHistory("ema", decay=0.8)
    restored.load_state_dict(json.loads(json.dumps(history.state_dict())))
    index = turn_index_in_trajectory(mask, ids)
    assert torch.equal(restored.reference_for(index), history.reference_for(index))
    assert restored.num_updates == 2
    with pytest.raises(ValueError, match="turn indices"):
        history.update({-1: 1.0})
    with pytest.raises(ValueError, match="differ"):
        PerTurnEntropyHistory().load_state_dict(history.state_dict())

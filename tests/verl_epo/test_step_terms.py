"""compute_step_terms on batches laid out the way verl's v1 agent-loop path lays them out.

Row keys are ``{uid}_{session}_{index}``. The same episodes are built in both layouts verl produces:
one row per turn (``u_0_0, u_0_1, ...``) and one row per conversation (several response runs in one
row, separated by environment tokens). Off-response positions hold a large value, so any leak of
padding into a statistic shows.
"""

import math

import pytest
import torch

from verl_epo.algorithm import EntropyHistory, PerTurnEntropyHistory
from verl_epo.config import EPOConfig
from verl_epo.row_keys import BatchTurns, RowKeyError, parse_row_key
from verl_epo.step_terms import compute_step_terms

# trajectory (uid_session) -> response lengths of its turns; u2_0 and u2_1 share a uid (a GRPO group)
TURNS = {"u1_0": [2, 5, 3], "u2_0": [4, 1], "u2_1": [6]}
GAP = 3  # environment tokens between two turns in the per-conversation layout
GARBAGE = 1e3  # value at off-response positions


def turn_entropies(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {traj: [0.1 + 3 * torch.rand(n, generator=g) for n in lengths] for traj, lengths in TURNS.items()}


def per_turn_layout(ent, with_turn_index=False):
    """One row per turn: keys ``{traj}_{turn}``. Optionally also the true turn index per token."""
    width = max(n for lengths in TURNS.values() for n in lengths) + 2
    keys, rows, masks, indices = [], [], [], []
    for traj, turns in ent.items():
        for index, values in enumerate(turns):
            row = torch.full((width,), GARBAGE)
            mask = torch.zeros(width, dtype=torch.int64)
            turn_index = torch.full((width,), -1)
            row[: len(values)] = values
            mask[: len(values)] = 1
            turn_index[: len(values)] = index
            keys.append(f"{traj}_{index}")
            rows.append(row)
            masks.append(mask)
            indices.append(turn_index)
    out = keys, torch.stack(rows), torch.stack(masks)
    return (*out, torch.stack(indices)) if with_turn_index else out


def per_conversation_layout(ent, with_turn_index=False):
    """One row per trajectory: turns separated by GAP environment tokens, key ``{traj}_0``."""
    width = max(sum(lengths) + GAP * len(lengths) for lengths in TURNS.values()) + 1
    keys, rows, masks, indices = [], [], [], []
    for traj, turns in ent.items():
        row = torch.full((width,), GARBAGE)
        mask = torch.zeros(width, dtype=torch.int64)
        turn_index = torch.full((width,), -1)
        pos = GAP  # the first response follows the first observation
        for index, values in enumerate(turns):
            row[pos : pos + len(values)] = values
            mask[pos : pos + len(values)] = 1
            turn_index[pos : pos + len(values)] = index
            pos += len(values) + GAP
        keys.append(f"{traj}_0")
        rows.append(row)
        masks.append(mask)
        indices.append(turn_index)
    out = keys, torch.stack(rows), torch.stack(masks)
    return (*out, torch.stack(indices)) if with_turn_index else out


def trajectory_and_turn_ids(keys, mask):
    turns = BatchTurns.from_keys(keys, mask)
    return turns.traj_ids, turns.turn_ids


def step(keys, entropy, mask, history=None, epo=None, k=0, total_steps=10, num_mini_batches=1, turn_history=None):
    return compute_step_terms(
        entropy=entropy,
        turns=BatchTurns.from_keys(keys, mask),
        history=history if history is not None else EntropyHistory(),
        epo=epo or EPOConfig(),
        step=k,
        total_steps=total_steps,
        num_mini_batches=num_mini_batches,
        turn_history=turn_history,
    )


def run_sums(weight, mask):
    """Sum of the weights over each run of response tokens, row by row, in order."""
    sums = []
    for w_row, m_row in zip(weight.tolist(), mask.tolist(), strict=True):
        current = None
        for w, m in zip(w_row, m_row, strict=True):
            if m:
                current = w if current is None else current + w
            elif current is not None:
                sums.append(current)
                current = None
        if current is not None:
            sums.append(current)
    return sums


def hand_trajectory_entropy(ent):
    """Eq. 2 by hand: token mean per turn, mean over turns, mean over trajectories."""
    per_traj = [sum(float(t.double().mean()) for t in turns) / len(turns) for turns in ent.values()]
    return sum(per_traj) / len(per_traj)


def history_with(*values, mode="cumulative"):
    history = EntropyHistory(mode)
    for value in values:
        history.update(value)
    return history


# ----- keys -> trajectory and turn ids ------------------------------------------------------------


def test_ids_from_per_turn_rows():
    keys = ["u1_0_0", "u1_0_1", "u1_0_2", "u2_1_0", "my_uid_7_3"]
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 1], [1, 0, 0]])
    traj, turns = trajectory_and_turn_ids(keys, mask)
    # session kept in the trajectory id; a uid with underscores survives
    assert traj == ["u1_0", "u1_0", "u1_0", "u2_1", "my_uid_7"]
    assert bool((turns[mask == 0] == -1).all())
    labels = [int(turns[r][mask[r] == 1].unique().item()) for r in range(len(keys))]
    # one label per row, ordered by the output index within trajectory u1_0
    assert labels[0] < labels[1] < labels[2]


@pytest.mark.parametrize("key", ["no-index-key", "u1_0", "u1_x_0", "u1_0_x", "_0_1", "u1_0_-1"])
def test_a_malformed_row_key_is_a_clear_error(key):
    with pytest.raises(RowKeyError, match="uid}_{session}_{index}") as info:
        BatchTurns.from_keys(["u1_0_0", key], torch.ones(2, 2))
    assert repr(key) in str(info.value)


def test_row_keys_order_by_uid_session_then_index():
    keys = ["b_0_0", "a_1_0", "a_0_10", "a_0_2"]
    assert sorted(keys, key=parse_row_key) == ["a_0_2", "a_0_10", "a_1_0", "b_0_0"]


def test_turn_offsets_rebuild_the_turn_index_from_a_row_alone():
    """What the loss does with each micro-batch's rows: offset + run of response_mask."""
    from verl_epo.row_keys import token_turn_index

    for layout in (per_turn_layout, per_conversation_layout):
        keys, _, mask, turn_index = layout(turn_entropies(), with_turn_index=True)
        turns = BatchTurns.from_keys(keys, mask)
        assert torch.equal(turns.turn_index, turn_index)
        offsets = turns.turn_offsets()
        for row in range(len(keys)):
            assert torch.equal(token_turn_index(mask[row : row + 1], offsets[row : row + 1]), turn_index[row : row + 1])


def test_ids_from_per_conversation_row_with_several_runs():
    mask = torch.tensor([[0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0]])
    traj, turns = trajectory_and_turn_ids(["abc_0_0"], mask)
    assert traj == ["abc_0"]
    on = turns[0][mask[0] == 1].tolist()
    assert on == [on[0], on[0], on[2], on[3], on[3], on[3]]
    assert on[0] < on[2] < on[3]
    assert turns[0][mask[0] == 0].tolist() == [-1] * 5


# ----- layouts, order, padding --------------------------------------------------------------------


def test_both_layouts_give_the_same_weights_and_entropies():
    ent = turn_entropies()
    turn_rows = step(*per_turn_layout(ent))
    conv_keys, conv_entropy, conv_mask = per_conversation_layout(ent)
    conv_rows = step(conv_keys, conv_entropy, conv_mask)
    _, _, turn_mask = per_turn_layout(ent)

    # every turn's weights sum to 1 / (B · T_n), in either layout
    expected = [1 / (len(TURNS) * len(lengths)) for lengths in TURNS.values() for _ in lengths]
    assert run_sums(turn_rows.weight, turn_mask) == pytest.approx(expected, rel=1e-6)
    assert run_sums(conv_rows.weight, conv_mask) == pytest.approx(expected, rel=1e-6)
    assert float(turn_rows.weight.sum()) == pytest.approx(1.0, rel=1e-6)
    assert float(conv_rows.weight[conv_mask == 0].abs().sum()) == 0.0

    hand = hand_trajectory_entropy(ent)
    for terms in (turn_rows, conv_rows):
        assert terms.metrics["epo/trajectory_entropy"] == pytest.approx(hand, rel=1e-6)
        assert terms.metrics["epo/turns_per_trajectory"] == pytest.approx(2.0)
    assert turn_rows.turn_entropy.keys() == conv_rows.turn_entropy.keys() == {0, 1, 2}
    for t in (0, 1, 2):
        assert turn_rows.turn_entropy[t] == pytest.approx(conv_rows.turn_entropy[t], rel=1e-6)
    # turn index 1 averages the tokens of u1_0's and u2_0's second turns
    second = torch.cat([ent["u1_0"][1], ent["u2_0"][1]])
    assert turn_rows.turn_entropy[1] == pytest.approx(float(second.mean()), rel=1e-6)
    all_tokens = torch.cat([t for turns in ent.values() for t in turns])
    assert turn_rows.batch_entropy == pytest.approx(float(all_tokens.mean()), rel=1e-6)
    assert conv_rows.batch_entropy == pytest.approx(turn_rows.batch_entropy, rel=1e-6)


@pytest.mark.parametrize("layout", [per_turn_layout, per_conversation_layout])
def test_reordered_rows_give_the_same_numbers(layout):
    ent = turn_entropies(seed=1)
    keys, entropy, mask = layout(ent)
    history = history_with(1.0, 1.6)
    epo = EPOConfig(kappa_low=0.5, kappa_high=1.2)
    base = step(keys, entropy, mask, history=history, epo=epo, k=3)
    perm = torch.randperm(len(keys), generator=torch.Generator().manual_seed(5))
    assert perm.tolist() != list(range(len(keys)))
    shuffled = step([keys[i] for i in perm], entropy[perm], mask[perm], history=history, epo=epo, k=3)

    torch.testing.assert_close(shuffled.weight, base.weight[perm])
    torch.testing.assert_close(shuffled.reference, base.reference[perm], equal_nan=True)
    assert shuffled.turn_entropy == pytest.approx(base.turn_entropy, rel=1e-6)
    assert shuffled.metrics == pytest.approx(base.metrics, rel=1e-6)
    assert shuffled.beta == base.beta


def test_padding_rows_are_ignored():
    ent = turn_entropies(seed=2)
    keys, entropy, mask = per_turn_layout(ent)
    history = history_with(1.2)
    epo = EPOConfig(kappa_low=0.5, kappa_high=1.2)
    base = step(keys, entropy, mask, history=history, epo=epo, k=1)

    # verl's synthetic padding rows: keys pad<hex>_{i}_0, all-zero response mask, any values
    pad_keys = [f"pad0123abcd_{i}_0" for i in range(3)]
    pad_entropy = torch.full((3, entropy.shape[1]), 7.0)
    padded = step(
        keys[:2] + pad_keys + keys[2:],
        torch.cat([entropy[:2], pad_entropy, entropy[2:]]),
        torch.cat([mask[:2], torch.zeros(3, mask.shape[1], dtype=mask.dtype), mask[2:]]),
        history=history,
        epo=epo,
        k=1,
    )
    assert float(padded.weight[2:5].abs().sum()) == 0.0
    torch.testing.assert_close(torch.cat([padded.weight[:2], padded.weight[5:]]), base.weight)
    assert padded.turn_entropy == pytest.approx(base.turn_entropy, rel=1e-6)
    assert padded.batch_entropy == pytest.approx(base.batch_entropy, rel=1e-6)
    assert padded.metrics == pytest.approx(base.metrics, rel=1e-6)


# ----- reference, band, smoothing metric ----------------------------------------------------------


def test_step_zero_has_no_reference():
    ent = turn_entropies()
    keys, entropy, mask = per_turn_layout(ent)
    terms = step(keys, entropy, mask, epo=EPOConfig(kappa_low=0.5, kappa_high=1.0))
    assert bool(torch.isnan(terms.reference).all())
    assert terms.metrics["epo/smooth_penalty"] == 0.0
    assert terms.metrics["epo/frac_above_band"] == 0.0
    assert terms.metrics["epo/frac_below_band"] == 0.0
    for name in ("epo/reference_entropy", "epo/band_low", "epo/band_high"):
        assert name not in terms.metrics
    assert terms.beta == 2.0  # Eq. 5 at k = 0


def test_band_mode_is_a_metric():
    keys, entropy, mask = per_turn_layout(turn_entropies())
    assert step(keys, entropy, mask, epo=EPOConfig()).metrics["epo/band_mode_hold"] == 0.0
    assert step(keys, entropy, mask, epo=EPOConfig(band_mode="hold")).metrics["epo/band_mode_hold"] == 1.0


def test_band_fractions_and_smoothing_metric_match_a_hand_count():
    # reference = mean(1.0, 2.0) = 1.5; band [0.5 · 1.5, 1.5 · 1.5] = [0.75, 2.25] (edges in band)
    history = history_with(1.0, 2.0)
    epo = EPOConfig(kappa_low=0.5, kappa_high=1.5, alpha=0.2)
    keys = ["a_0_0", "a_0_1", "b_0_0"]
    entropy = torch.tensor(
        [[0.5, 1.0, 3.0, GARBAGE], [2.25, 0.75, 0.7, 2.3], [1.5, GARBAGE, GARBAGE, GARBAGE]]
    )
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    terms = step(keys, entropy, mask, history=history, epo=epo, k=2)

    # 8 response tokens: above 2.25 are 3.0 and 2.3; below 0.75 are 0.5 and 0.7
    assert terms.metrics["epo/frac_above_band"] == pytest.approx(2 / 8)
    assert terms.metrics["epo/frac_below_band"] == pytest.approx(2 / 8)
    assert terms.metrics["epo/reference_entropy"] == pytest.approx(1.5)
    assert terms.metrics["epo/band_low"] == pytest.approx(0.75)
    assert terms.metrics["epo/band_high"] == pytest.approx(2.25)
    assert bool((terms.reference == 1.5).all())
    # hinge per token: a turn 0 [0.25, 0, 0.75], a turn 1 [0, 0, 0.05, 0.05], b [0]
    traj_a = ((0.25 + 0.75) / 3 + 0.1 / 4) / 2
    assert terms.metrics["epo/smooth_penalty"] == pytest.approx(0.2 * (traj_a + 0.0) / 2, rel=1e-5)
    assert terms.metrics["epo/batch_entropy"] == pytest.approx(sum([0.5, 1.0, 3.0, 2.25, 0.75, 0.7, 2.3, 1.5]) / 8)


@pytest.mark.parametrize("mode", ["window", "ema"])
def test_reference_follows_the_configured_history(mode):
    epo = EPOConfig.from_dict({"reference": {"mode": mode, "window": 2, "decay": 0.5}})
    history = EntropyHistory(mode, window=2 if mode == "window" else None, decay=0.5 if mode == "ema" else None)
    for value in (1.0, 2.0, 4.0):
        history.update(value)
    expected = 3.0 if mode == "window" else 0.5 * (0.5 * 1.0 + 0.5 * 2.0) + 0.5 * 4.0
    keys, entropy, mask = per_turn_layout(turn_entropies())
    terms = step(keys, entropy, mask, history=history, epo=epo, k=3)
    assert terms.metrics["epo/reference_entropy"] == pytest.approx(expected)
    assert bool((terms.reference == expected).all())


@pytest.mark.parametrize("layout", [per_turn_layout, per_conversation_layout])
def test_per_turn_reference_by_turn_index(layout):
    keys, entropy, mask, turn_index = layout(turn_entropies(), with_turn_index=True)
    turn_history = PerTurnEntropyHistory()
    turn_history.update({0: 1.0, 1: 2.0})
    turn_history.update({0: 2.0, 1: 2.5})
    history = history_with(1.4, 2.6)  # global reference 2.0: the fallback for the unseen turn index 2
    terms = step(keys, entropy, mask, history=history, turn_history=turn_history, k=2)

    for index, expected in {0: 1.5, 1: 2.25, 2: 2.0}.items():
        on = turn_index == index
        assert bool(on.any())
        assert terms.reference[on].tolist() == [expected] * int(on.sum()), index
    assert bool(torch.isnan(terms.reference[mask == 0]).all())
    assert terms.metrics["epo/reference_entropy"] == pytest.approx(2.0)  # the global one is logged


def test_per_turn_reference_at_step_zero_is_nan():
    keys, entropy, mask = per_turn_layout(turn_entropies())
    terms = step(keys, entropy, mask, turn_history=PerTurnEntropyHistory())
    assert bool(torch.isnan(terms.reference).all())
    assert terms.metrics["epo/smooth_penalty"] == 0.0


# ----- weights scale, β ---------------------------------------------------------------------------


def test_num_mini_batches_scales_the_weights():
    keys, entropy, mask = per_turn_layout(turn_entropies())
    one = step(keys, entropy, mask)
    four = step(keys, entropy, mask, num_mini_batches=4)
    torch.testing.assert_close(four.weight, 4 * one.weight)
    assert float(four.weight.sum()) == pytest.approx(4.0, rel=1e-6)
    # the metrics are whole-batch values, unaffected by the split
    assert four.metrics == pytest.approx(one.metrics)


@pytest.mark.parametrize(("k", "total"), [(0, 125), (1, 125), (62, 125), (124, 125), (7, 10), (30, 10)])
def test_beta_follows_eq5(k, total):
    keys, entropy, mask = per_turn_layout(turn_entropies())
    terms = step(keys, entropy, mask, k=k, total_steps=total, epo=EPOConfig(gamma=3.0))
    expected = 1 + math.exp(-3.0 * k / max(1, total // 2))
    assert terms.beta == pytest.approx(expected, rel=1e-12)
    assert terms.metrics["epo/beta"] == terms.beta


def test_beta_is_one_without_phase_weight():
    keys, entropy, mask = per_turn_layout(turn_entropies())
    for k in (0, 5, 50):
        assert step(keys, entropy, mask, k=k, epo=EPOConfig(use_phase_weight=False)).beta == 1.0


def test_total_steps_from_config_overrides_the_trainers():
    keys, entropy, mask = per_turn_layout(turn_entropies())
    terms = step(keys, entropy, mask, k=5, total_steps=1000, epo=EPOConfig(total_steps=10))
    assert terms.beta == pytest.approx(1 + math.exp(-3.0 * 5 / 5))
    trainer_k = step(keys, entropy, mask, k=5, total_steps=1000)
    assert trainer_k.beta == pytest.approx(1 + math.exp(-3.0 * 5 / 500))


def test_turn_bucket_metrics():
    ent = turn_entropies()
    keys, entropy, mask = per_turn_layout(ent)
    terms = step(keys, entropy, mask, epo=EPOConfig(turn_buckets=8))
    # fewer turn indices than buckets: one metric per turn index, equal to the turn-index mean
    for t, value in terms.turn_entropy.items():
        assert terms.metrics[f"epo/entropy_turn_{t:03d}"] == pytest.approx(value, rel=1e-6)
    merged = step(keys, entropy, mask, epo=EPOConfig(turn_buckets=1))
    buckets = [name for name in merged.metrics if name.startswith("epo/entropy_turn_")]
    assert buckets == ["epo/entropy_turn_000"]
    assert merged.metrics["epo/entropy_turn_000"] == pytest.approx(merged.batch_entropy, rel=1e-6)


def test_trajectory_balance_scale_gives_every_trajectory_the_same_total():
    from verl_epo.step_terms import trajectory_balance_scale

    # trajectory a: 3 rows, b: 1 row, padding row ignored; mean rows = (3 + 1) / 2 = 2
    keys = ["a_0_0", "a_0_1", "a_0_2", "b_1_0", "pad_0_0"]
    scale = trajectory_balance_scale([parse_row_key(k).trajectory for k in keys], [True, True, True, True, False])
    assert scale.tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2.0, 1.0])
    assert float(scale[:3].sum()) == pytest.approx(float(scale[3]))

"""EPOState: the entropy histories the EPO trainer saves in verl's checkpoint folder and restores.

Files are written and read for real in a temporary folder. The full resume through verl's trainer
is an end-to-end test of its own.
"""

import json
import random

import pytest

from verl_epo.config import EPOConfig
from verl_epo.step_terms import StepTerms
from verl_epo.trainer import STATE_FILE, EPOState


def epo_config(mode, per_turn):
    return EPOConfig.from_dict({"reference": {"mode": mode, "window": 3, "decay": 0.7, "per_turn": per_turn}})


def fake_step(rng):
    """A step's recorded quantities (what compute_step_terms returns; weights are not recorded)."""
    turns = rng.randint(1, 6)
    return StepTerms(
        weight=None,
        reference_value=None,
        beta=1.0,
        batch_entropy=rng.uniform(0.2, 3.0),
        turn_entropy={t: rng.uniform(0.2, 3.0) for t in range(turns)},
    )


def references(state, max_turn=8):
    refs = {"global": state.history.reference, "values": state.history.values}
    if state.turn_history is not None:
        refs["turns"] = {t: state.turn_history.reference_at(t) for t in range(max_turn)}
        refs["num_updates"] = state.turn_history.num_updates
    return refs


@pytest.mark.parametrize("per_turn", [False, True])
@pytest.mark.parametrize("mode", ["cumulative", "window", "ema"])
def test_save_load_round_trip(tmp_path, mode, per_turn):
    epo = epo_config(mode, per_turn)
    rng = random.Random(7)
    state = EPOState(epo)
    for _ in range(5):
        state.record(fake_step(rng))
    folder = tmp_path / "global_step_5"
    path = state.save(str(folder), global_step=5)
    assert path == str(folder / STATE_FILE)
    assert sorted(p.name for p in folder.iterdir()) == [STATE_FILE]  # no temporary file left
    assert json.loads((folder / STATE_FILE).read_text())["global_step"] == 5

    restored = EPOState(epo)
    assert restored.load(str(folder)) == 5
    assert references(restored) == references(state)  # exact: same floats, same order

    # both go on identically: the resumed run's references are bit-for-bit the straight run's
    for _ in range(4):
        terms = fake_step(rng)
        state.record(terms)
        restored.record(terms)
        assert references(restored) == references(state)
    if per_turn:
        assert restored.turn_history.turn_indices == state.turn_history.turn_indices


def test_fresh_state_round_trip(tmp_path):
    """A checkpoint saved before any step recorded (no reference yet) restores as such."""
    epo = epo_config("cumulative", True)
    EPOState(epo).save(str(tmp_path), global_step=0)
    restored = EPOState(epo)
    assert restored.load(str(tmp_path)) == 0
    assert restored.history.reference is None
    assert restored.turn_history.reference_at(0) is None


def test_missing_state_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        EPOState(EPOConfig()).load(str(tmp_path))
    message = str(info.value)
    assert STATE_FILE in message and str(tmp_path) in message
    assert "trainer_mode=epo" in message  # says how to get a checkpoint that has one


def test_per_turn_checkpoint_missing_for_per_turn_run(tmp_path):
    rng = random.Random(1)
    plain = EPOState(epo_config("cumulative", False))
    plain.record(fake_step(rng))
    plain.save(str(tmp_path), global_step=1)
    with pytest.raises(ValueError, match="per_turn"):
        EPOState(epo_config("cumulative", True)).load(str(tmp_path))


def test_other_reference_mode_is_refused(tmp_path):
    rng = random.Random(2)
    saved = EPOState(epo_config("cumulative", False))
    saved.record(fake_step(rng))
    saved.save(str(tmp_path), global_step=1)
    with pytest.raises(ValueError, match="settings"):
        EPOState(epo_config("ema", False)).load(str(tmp_path))


def test_saving_again_replaces_the_file(tmp_path):
    rng = random.Random(3)
    state = EPOState(epo_config("cumulative", False))
    state.record(fake_step(rng))
    state.save(str(tmp_path), global_step=1)
    state.record(fake_step(rng))
    state.save(str(tmp_path), global_step=2)
    restored = EPOState(epo_config("cumulative", False))
    assert restored.load(str(tmp_path)) == 2
    assert restored.history.values == state.history.values

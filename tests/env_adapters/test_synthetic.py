"""The synthetic corridor game: determinism, rules, and that it suits GRPO on a tiny model."""

import random

import pytest

from env_adapters import make_game, task_set
from env_adapters.synthetic import CorridorGame, parse_task


def play(game, policy, task="corridor", variation=0, seed=0):
    """Play one episode; returns (final state, list of (observation, action))."""
    state = game.reset(task, variation, seed)
    trace = []
    while not state.done:
        action = policy(game)
        trace.append((state.observation, action))
        state = game.step(action)
    return state, trace


def random_policy(seed):
    rng = random.Random(seed)
    return lambda game: rng.choice(game.admissible_actions())


def test_registered_and_described():
    game = make_game("synthetic")
    state = game.reset("corridor-8", variation=3, seed=5)
    assert "Room 1 of 8" in state.observation and "sign points" in state.observation
    assert "8 rooms" in game.task_description
    assert game.task_type == "medium"
    assert set(game.admissible_actions()) >= {"go north", "go south", "go east", "go west"}
    assert not state.done and not state.won


def test_same_task_variation_seed_replays_exactly():
    a, b = CorridorGame(), CorridorGame()
    sa, ta = play(a, random_policy(1), "corridor-7", 4, 9)
    sb, tb = play(b, random_policy(1), "corridor-7", 4, 9)
    assert ta == tb and sa.observation == sb.observation and sa.won == sb.won
    # a different variation is a different layout
    exp = CorridorGame()
    _, t1 = play(exp, CorridorGame.expert_action, "corridor-20", 0, 0)
    _, t2 = play(exp, CorridorGame.expert_action, "corridor-20", 1, 0)
    assert [a for _, a in t1] != [a for _, a in t2]


@pytest.mark.parametrize("length", [5, 6, 8, 20, 50])
def test_expert_always_wins_in_about_length_turns(length):
    game = CorridorGame()
    for variation in range(20):
        state, trace = play(game, CorridorGame.expert_action, f"corridor-{length}", variation,
                            variation)
        assert state.won and state.done and state.score == 1.0
        doors = sum(a == "open door" for _, a in trace)
        assert len(trace) == length + doors


def test_random_admissible_policy_wins_sometimes():
    game = CorridorGame()
    wins = [play(game, random_policy(s), "corridor", s, s)[0].won for s in range(200)]
    rate = sum(wins) / len(wins)
    print(f"random-admissible success at corridor-6: {rate:.3f}")
    assert 0.05 <= rate <= 0.60
    train = task_set("synthetic/train")
    wins = [play(game, random_policy(i), t.task, t.variation, t.seed)[0].won
            for i, t in enumerate(train)]
    assert 0.05 <= sum(wins) / len(wins) <= 0.60


def test_wrong_valid_action_wastes_a_turn_and_limit_ends_game():
    game = CorridorGame()
    game.reset("corridor-5", 0, 0)
    wrong = next(a for a in game.admissible_actions()
                 if a.startswith("go ") and a != game.expert_action())
    state = game.step(wrong)
    assert state.valid_action and not state.done and "loops back" in state.observation
    assert state.info["room"] == 0
    for _ in range(game.max_steps - 2):
        state = game.step(wrong)
        assert not state.done
    state = game.step(wrong)
    assert state.done and not state.won and state.info["steps"] == game.max_steps == 15


def test_invalid_actions_never_raise():
    game = CorridorGame()
    game.reset("corridor-5", 2, 2)
    for bad in ["", "dance", "x" * 10_000, None, 42, "go up", "<action>go north</action>"]:
        state = game.step(bad)
        assert state.valid_action is False and "not a valid action" in state.observation
        assert len(state.observation) < 200
    # case and spacing do not matter
    game.reset("corridor-5", 2, 2)
    state = game.step("  " + game.expert_action().upper().replace(" ", "   "))
    assert state.valid_action


def test_open_door_only_where_a_closed_door_is():
    game = CorridorGame(door_prob=1.0)
    game.reset("corridor-5", 0, 0)
    assert game.expert_action() == "open door" and "open door" in game.admissible_actions()
    direction = "go " + game._rooms[0].sign
    state = game.step(direction)
    assert "closed" in state.observation and state.info["room"] == 0
    state = game.step("open door")
    assert state.valid_action and "open door" not in game.admissible_actions()
    assert game.step("open door").valid_action is False
    assert game.step(direction).info["room"] == 1
    no_doors = CorridorGame(door_prob=0.0)
    no_doors.reset("corridor-5", 0, 0)
    assert no_doors.step("open door").valid_action is False


def test_step_after_done_is_harmless():
    game = CorridorGame()
    state, _ = play(game, CorridorGame.expert_action, "corridor-5")
    assert state.won
    again = game.step("go north")
    assert again.done and again.won and not again.valid_action
    assert game.admissible_actions() == []


def test_bad_task_names_and_settings_are_explained():
    with pytest.raises(ValueError, match="corridor-N"):
        parse_task("maze-3")
    with pytest.raises(ValueError, match="out of range"):
        CorridorGame().reset("corridor-1000")
    with pytest.raises(ValueError, match="step_factor"):
        CorridorGame(step_factor=0.5)
    with pytest.raises(RuntimeError, match="reset"):
        CorridorGame().step("go north")


def test_task_sets_fixed_and_disjoint():
    train, val = task_set("synthetic/train"), task_set("synthetic/val")
    assert len(train) == 64 and len(val) == 16
    assert train == task_set("synthetic/train")
    assert not {(t.variation, t.seed) for t in train} & {(t.variation, t.seed) for t in val}
    assert {t.task_type for t in train} == {"short", "medium"}
    assert all(t.game == "synthetic" for t in train + val + task_set("synthetic/long"))
    game = CorridorGame()
    for spec in val:
        game.reset(spec.task, spec.variation, spec.seed)
        assert game.task_type == spec.task_type


def follow_the_sign(game):
    """The corridor's rule, which the warm start teaches: open a closed door, else follow the sign."""
    room = game._room()
    return "open door" if room.door and not game._door_open else f"go {room.sign}"


def test_cascade_lure_fails_late_and_only_the_passage_wins():
    game = CorridorGame()
    for spec in task_set("synthetic/cascade-val"):
        length = int(spec.task.split("-")[1])
        state = game.reset(spec.task, spec.variation, spec.seed)
        lure_move = follow_the_sign(game)
        assert "A dark passage leads" in state.observation and "dead end" in game.task_description
        assert game.task_type == "cascade"
        lured, trace = play(game, follow_the_sign, spec.task, spec.variation, spec.seed)
        moves = sum(a != "open door" for _, a in trace)
        assert not lured.won and lured.done and moves == length, "the lure ends only after the last room"
        assert "dead end" in lured.observation
        won, trace = play(game, CorridorGame.expert_action, spec.task, spec.variation, spec.seed)
        assert won.won and trace[0][1] != lure_move


def test_cascade_random_play_sometimes_wins_and_corridors_are_unchanged():
    game = CorridorGame()
    tasks = task_set("synthetic/cascade-train")
    wins = [play(game, random_policy(i), t.task, t.variation, t.seed)[0].won for i, t in enumerate(tasks)]
    rate = sum(wins) / len(wins)
    print(f"random-admissible success on synthetic/cascade-train: {rate:.3f}")
    assert 0.02 <= rate <= 0.4
    # a cascade's rooms are their own layout; the corridor of the same (N, variation) is as before
    cascade = CorridorGame()
    cascade.reset("cascade-6", 3, 3)
    game.reset("corridor-6", 3, 3)
    assert [r.sign for r in game._rooms] != [r.sign for r in cascade._rooms]
    assert not any(r.passage for r in game._rooms) and game._lure == []

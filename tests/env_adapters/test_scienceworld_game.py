"""ScienceWorld behind the game interface, on the real JVM: gold paths win, failures and
time-outs do not, the simulator's rejections are reported invalid."""

import pytest

from env_adapters import GameState, make_game, task_set
from env_adapters.sciworld.game import ScienceWorldGame, compact_actions

# five task types with short gold paths, one variation each from the paper's IID/OOD sets
GOLD_CASES = [
    ("find-non-living-thing", 150),
    ("lifespan-longest-lived", 93),
    ("chemistry-mix-paint-secondary-color", 18),
    ("find-animal", 225),
    ("power-component", 10),
]


@pytest.fixture(scope="module")
def game():
    game = make_game("sciworld")
    yield game
    game.close()


def play(game, actions):
    state = None
    for action in actions:
        state = game.step(action)
        if state.done:
            break
    return state


def test_registered_with_the_paper_defaults(game):
    assert isinstance(game, ScienceWorldGame)
    assert game.simplification == "easy" and game.env_step_limit == 100
    assert game.jvm_heap == "256m"


@pytest.mark.parametrize("task,variation", GOLD_CASES)
def test_gold_path_replayed_wins(game, task, variation):
    start = game.reset(task, variation)
    assert isinstance(start, GameState) and not start.done and start.observation
    assert game.task_type == task and game.task_description.startswith("Your task is")
    gold = game.gold_actions()
    assert gold and game.admissible_actions()
    state = play(game, gold)
    assert state.done and state.won and state.score == 100
    assert state.info["completed"] and "failure" not in state.info


def test_task_by_index_and_sets_are_playable(game):
    spec = task_set("sciworld/l2-test-small")[0]
    by_name = game.reset(spec.task, spec.variation)
    by_index = game.reset("1", spec.variation)
    assert game.task_type == spec.task == "change-the-state-of-matter-of"
    assert by_name.observation == by_index.observation


def test_wrong_focus_is_a_failure_not_a_success(game):
    game.reset("boil", 14)
    state = game.step("focus on agent")
    assert state.done and not state.won and state.score == -100 and state.valid_action


def test_step_limit_with_partial_score_is_not_a_success():
    game = make_game("sciworld", env_step_limit=3)
    try:
        game.reset("chemistry-mix-paint-secondary-color", 18)
        state = play(game, game.gold_actions())
        assert state.done and not state.won
        assert 0 < state.score < 100 and state.info["moves"] > 3
        assert not state.info["completed"]
    finally:
        game.close()


def test_step_after_done_is_invalid_and_keeps_the_outcome(game):
    game.reset("boil", 14)
    game.step("focus on agent")
    again = game.step("look around")
    assert again.done and not again.won and not again.valid_action and again.score == -100


def test_rejections_are_invalid_and_take_no_move(game):
    game.reset("boil", 15)
    for action in ["", "   ", "xyzzy", "pick up", "focus on", "a" * 10_000, "\n\t", "0", "é☃\x00"]:
        state = game.step(action)
        assert not state.valid_action, action
        assert not state.done and state.info["moves"] == 0
    assert game.step("look around").valid_action
    assert game.step("inventory").valid_action


def test_ambiguous_input_asks_for_a_number(game):
    game.reset("chemistry-mix-paint-secondary-color", 18)
    game.step("teleport to art studio")
    asked = game.step("look at paint")
    assert asked.valid_action and asked.info.get("ambiguous")
    assert game.actions_prompt().startswith("Answer with the number")
    assert game.admissible_actions() == ["0", "1", "2"]
    assert game.step("1").valid_action
    game.step("look at paint")
    assert not game.step("take the paint").valid_action  # not a number: rejected


def test_actions_prompt_is_compact_and_covers_the_valid_list(game):
    game.reset("boil", 16)
    game.step("teleport to kitchen")
    prompt = game.actions_prompt()
    valid = game.admissible_actions()
    assert len(valid) > 500 and len(prompt) < 1500 < len("\n".join(valid))
    assert "teleport to OBJ" in prompt and "Objects: " in prompt and "kitchen" in prompt


def test_compact_actions_format():
    text = compact_actions(["open OBJ", "go OBJ", "open OBJ"], ["door", "air"])
    assert text == (
        "Action templates (replace OBJ with an object): go to OBJ, open OBJ\nObjects: air, door"
    )


def test_same_variation_is_the_same_world(game):
    # the simulator has unseeded randomness (listing order, wandering animals): compare contents
    for task, variation in [("find-animal", 225), ("inclined-plane-determine-angle", 84)]:
        first = game.reset(task, variation)
        description = game.task_description
        again = game.reset(task, variation, seed=7)
        assert sorted(again.observation.splitlines()) == sorted(first.observation.splitlines())
        assert game.task_description == description


def test_variation_from_a_parquet_row(game):
    numpy = pytest.importorskip("numpy")
    state = game.reset("boil", numpy.int64(3))
    assert state.info["variation"] == 3 and type(state.info["variation"]) is int
    with pytest.raises(ValueError, match="variation '3'"):
        game.reset("boil", "3")


def test_jvm_is_reused_across_episodes(game):
    game.reset("boil", 0)
    pid = game.jvm_pid
    for variation in (1, 2):
        game.reset("boil", variation)
        game.step("look around")
    assert game.jvm_pid == pid and game.jvm_restarts == 0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"simplification": "eazy"}, "simplification"),
        ({"env_step_limit": 0}, "env_step_limit"),
        ({"jvm_heap": "lots"}, "jvm_heap"),
        ({"step_timeout": -1}, "step_timeout"),
    ],
)
def test_bad_config_names_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_game("sciworld", **kwargs)


def test_bad_task_or_variation_names_the_fix(game):
    with pytest.raises(ValueError, match="unknown ScienceWorld task 'bake'"):
        game.reset("bake")
    with pytest.raises(ValueError, match="out of range; use 0..29"):
        game.reset("30")
    with pytest.raises(ValueError, match="variation 30 .* use 0..29"):
        game.reset("boil", 30)
    with pytest.raises(RuntimeError, match="reset"):
        ScienceWorldGame().step("look around")

"""ALFWorld on the real TextWorld engine and the shared offline data: sets, expert wins, turn
limit, malformed actions, data-folder errors."""

import random
import subprocess
import sys
import threading
from collections import Counter

import pytest

from env_adapters import make_game, task_set
from env_adapters.alfworld import (
    DATA_ENV,
    INVALID_FEEDBACK,
    TASK_TYPES,
    AlfworldDataError,
    AlfworldGame,
    data_dir,
)

TYPES = ["look_at_obj_in_light", "pick_and_place", "pick_clean_then_place",
         "pick_cool_then_place", "pick_heat_then_place", "pick_two_obj_and_place"]
# per-type counts (look / pick / clean / cool / heat / pick_two), from the data's SOURCE.md
EXPECTED = {
    "alfworld/train": (200, (19, 46, 37, 28, 25, 45)),
    "alfworld/valid-seen": (140, (13, 35, 27, 25, 16, 24)),
    "alfworld/valid-unseen": (134, (18, 24, 31, 21, 23, 17)),
}


@pytest.fixture(scope="module")
def game():
    g = make_game("alfworld")
    yield g
    g.close()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_set_sizes_and_per_type_counts(name):
    specs = task_set(name)
    total, per_type = EXPECTED[name]
    assert len(specs) == total
    counts = Counter(s.task_type for s in specs)
    assert tuple(counts[t] for t in TYPES) == per_type
    assert specs == sorted(specs, key=lambda s: s.task) and specs == task_set(name)
    assert len({s.task for s in specs}) == total
    split = name.split("/")[1].replace("-", "_")
    for s in specs:
        assert s.game == "alfworld" and s.variation == 0 and s.seed == 0
        assert s.task.startswith(f"json_2.1.1/{split}/") and s.task.endswith("/game.tw-pddl")
        assert (data_dir() / s.task).is_file()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_small_sets_are_first_two_games_of_each_type(name):
    full, small = task_set(name), task_set(f"{name}-small")
    assert len(small) == 12 and Counter(s.task_type for s in small) == dict.fromkeys(TYPES, 2)
    for kind in TYPES:
        assert [s for s in small if s.task_type == kind] == \
            [s for s in full if s.task_type == kind][:2]


def test_planner_expert_wins_one_game_of_each_type(game):
    firsts = {}
    for spec in task_set("alfworld/valid-seen-small"):
        firsts.setdefault(spec.task_type, spec)
    assert sorted(firsts) == sorted(TYPES)
    for kind, spec in firsts.items():
        state = game.reset(spec.task)
        assert not state.won and not state.done
        assert game.task_type == kind
        assert game.task_description and game.task_description in state.observation
        plan = game.expert_actions()
        assert plan, f"planner found no plan for {spec.task}"
        for action in plan:
            assert action in game.admissible_actions(), (spec.task, action)
            assert not state.done
            state = game.step(action)
            assert state.valid_action
        assert state.won and state.done and state.score == 1.0, (spec.task, plan)


def test_running_out_of_turns_is_not_a_win():
    spec = task_set("alfworld/valid-unseen-small")[0]
    limited = AlfworldGame(max_steps=7)
    limited.reset(spec.task)
    states = [limited.step("look") for _ in range(7)]
    assert all(s.valid_action and not s.won for s in states)
    assert [s.done for s in states] == [False] * 6 + [True]
    assert states[-1].info.get("out_of_steps")
    after = limited.step("look")
    assert after.done and not after.won and not after.valid_action
    # a new episode starts fresh
    assert not limited.reset(spec.task).done


def test_reset_replays_the_same_game_and_episode_starts_fresh(game):
    spec = task_set("alfworld/train-small")[0]
    argv = list(sys.argv)
    first = game.reset(spec.task)
    assert sys.argv == argv, "the PDDL translator's sys.argv change must not leak"
    actions, goal, plan = game.admissible_actions(), game.task_description, game.expert_actions()
    for action in plan:
        game.step(action)
    again = game.reset(spec.task)  # same game: translation reused
    assert again.observation == first.observation and not again.won and not again.done
    assert game.admissible_actions() == actions and game.task_description == goal
    assert game.expert_actions() == plan
    for action in plan:
        state = game.step(action)
    assert state.won


def test_games_in_threads_reset_independently():
    """The agent loop steps games from threads; resets share the translator, which is locked."""
    tasks = [s.task for s in task_set("alfworld/train-small")[4:6]]
    expected = {}
    for task in tasks:
        solo = AlfworldGame()
        expected[task] = (solo.reset(task).observation, solo.admissible_actions())
    seen = {}

    def play(task):
        g = AlfworldGame()
        for _ in range(2):
            seen.setdefault(task, []).append((g.reset(task).observation, g.admissible_actions()))

    threads = [threading.Thread(target=play, args=(t,)) for t in tasks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(seen[t] == [expected[t]] * 2 for t in tasks)


def _near_misses(actions, rng):
    """Strings that look like commands of this game but are not admissible."""
    a = rng.choice(actions)
    words = a.split()
    return [
        a + "s", a[:-1], a + " 1", a.replace(" ", "", 1), a + ".", "please " + a,
        " ".join(reversed(words)), a.replace("1", "99"), a.replace("in/on", "into"),
        a.replace("go to", "goto"), "move " + " ".join(words[1:]) + " to desk 1",
        "put " + a, a + " " + a, a.replace(" ", "\u00a0x "),
    ]


def _malformed(rng, actions):
    junk = ["", " ", "\n\t", "\x00", "10k:" + "a" * 10_000, "🙂🙂🙂", "ÄÖÜ ß ∑ 漢字", "\u202egoto",
            "'; DROP TABLE games; --", "{}", "None", "look" * 2500, "\r\n" * 100]
    ascii_garbage = "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randrange(1, 60)))
    unicode_garbage = "".join(chr(rng.randrange(0x80, 0x2FFF)) for _ in range(rng.randrange(1, 40)))
    pick = rng.random()
    if pick < 0.3:
        return rng.choice(junk)
    if pick < 0.5:
        return ascii_garbage
    if pick < 0.6:
        return unicode_garbage
    near = [m for m in _near_misses(actions, rng) if AlfworldGame.normalize(m) not in actions]
    return rng.choice(near)


def test_fuzz_thousand_malformed_actions(game):
    spec = task_set("alfworld/valid-seen-small")[2]
    game.reset(spec.task)
    rng = random.Random(0)
    invalid = valid = 0
    for i in range(1000):
        admissible = game.admissible_actions()
        # every 25th action is a real one, so the fuzz also runs from states deeper in the game
        action = rng.choice(admissible) if i % 25 == 0 else _malformed(rng, admissible)
        expected_valid = AlfworldGame.normalize(action) in admissible
        state = game.step(action)
        assert state.valid_action == expected_valid, repr(action[:80])
        if not expected_valid:
            invalid += 1
            assert state.observation == INVALID_FEEDBACK and game.admissible_actions() == admissible
        else:
            valid += 1
        if state.done:
            game.reset(spec.task)
    assert invalid == 960 and valid == 40


def test_case_and_spacing_are_normalised(game):
    spec = task_set("alfworld/valid-seen-small")[0]
    game.reset(spec.task)
    target = game.admissible_actions()[0]
    assert game.step("  " + target.upper().replace(" ", "   ") + "\n").valid_action


def test_bad_requests_give_clear_errors(game):
    with pytest.raises(FileNotFoundError, match="relative to ALFWORLD_DATA"):
        game.reset("json_2.1.1/train/no-such-task/trial/game.tw-pddl")
    with pytest.raises(ValueError, match="variation"):
        game.reset(task_set("alfworld/train-small")[0].task, variation=3)
    with pytest.raises(RuntimeError, match="before reset"):
        AlfworldGame().step("look")


def test_missing_or_incomplete_data_names_variable_and_layout(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "absent"))
    with pytest.raises(AlfworldDataError, match="ALFWORLD_DATA=.*does not exist.*expected layout"):
        data_dir()
    partial = tmp_path / "partial"
    (partial / "json_2.1.1" / "train" / "pick_and_place_simple-x" / "trial_1").mkdir(parents=True)
    (partial / "json_2.1.1" / "train" / "pick_and_place_simple-x" / "trial_1" / "game.tw-pddl"
     ).write_text("{}")
    monkeypatch.setenv(DATA_ENV, str(partial))
    with pytest.raises(AlfworldDataError) as err:
        make_game("alfworld")
    message = str(err.value)
    assert "valid_seen" in message and "valid_unseen" in message and "logic/alfred.pddl" in message
    assert "json_2.1.1/{train,valid_seen,valid_unseen}/<task>/<trial>/game.tw-pddl" in message


def test_task_types_cover_the_six_families():
    assert sorted(TASK_TYPES.values()) == sorted(TYPES)


def test_importing_the_package_stays_light():
    code = "import sys, env_adapters; assert 'textworld' not in sys.modules, 'eager import'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_engine_agrees_that_rejected_actions_change_nothing(game):
    """The adapter answers rejected actions itself; the raw engine must answer them the same."""
    spec = task_set("alfworld/valid-seen-small")[4]
    game.reset(spec.task)
    engine, admissible = game._env, game.admissible_actions()
    rng = random.Random(1)
    for _ in range(30):
        action = _malformed(rng, admissible)
        state, _, done = engine.step(action)
        assert state.feedback.strip() == INVALID_FEEDBACK and not done
        assert state["admissible_commands"] == admissible

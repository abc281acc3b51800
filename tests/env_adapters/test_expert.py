"""Expert SFT data: real games, the agent loop's prompts, verl's own SFT dataset class."""

import re
import subprocess
import sys
from collections import defaultdict

import pytest

from env_adapters import make_game
from env_adapters.episode import EpisodeSettings
from env_adapters.expert import expert_method, expert_rows, load_sft_rows, write_sft
from env_adapters.parsing import parse_action
from env_adapters.prompting import Turn, build_messages

SETTINGS = EpisodeSettings(max_turns=30, history_turns=2)
ACTION_RE = re.compile(r"^<action>([^<>]+)</action>$")


def by_episode(rows):
    episodes = defaultdict(list)
    for row in rows:
        episodes[row["extra_info"]["episode"]].append(row)
    return [sorted(turns, key=lambda r: r["extra_info"]["turn"]) for _, turns in sorted(episodes.items())]


def same_prompt(a, b, exact):
    if exact:
        return a == b
    # ScienceWorld lists a room's objects in a different order after each reset
    return [sorted(m["content"].splitlines()) for m in a] == [sorted(m["content"].splitlines()) for m in b]


def replay(game, turns, settings, check_expert=False, exact=True):
    """Play an episode's rows' actions on a fresh reset; every row's prompt must be the one the
    agent loop builds at that turn (``exact=False``: up to line order). Returns the final state."""
    info = turns[0]["extra_info"]
    state = game.reset(info["task"], info["variation"], info["seed"])
    history = []
    for turn, row in enumerate(turns):
        assert row["extra_info"]["turn"] == turn
        *prompt, answer = row["messages"]
        window = history[-settings.history_turns:] if settings.history_turns else []
        expected = build_messages(game.task_description, state.observation, window, game.actions_prompt(),
                                  turn, settings.max_turns)
        assert same_prompt(prompt, expected, exact), f"turn {turn} of {info['task']}: prompt differs"
        assert answer["role"] == "assistant" and ACTION_RE.match(answer["content"]), answer
        action = parse_action(answer["content"], game.admissible_actions(), settings.parser)
        if check_expert:
            assert action == game.expert_action()
        assert not state.done
        state = game.step(action)
        assert state.valid_action, (action, state.observation)
        history.append(Turn(action, state.observation))
    return state


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    rows, report = expert_rows("synthetic/train", SETTINGS)
    path = write_sft(rows, tmp_path_factory.mktemp("sft"))
    return rows, report, path


def test_synthetic_expert_wins_every_task_and_counts_add_up(synthetic):
    rows, report, _ = synthetic
    assert report.episodes == report.won == 64 and report.lost == []
    assert report.rows == report.turns == len(rows)
    assert len(by_episode(rows)) == 64
    for turns in by_episode(rows):
        assert turns[-1]["extra_info"]["episode_turns"] == len(turns)


def test_synthetic_rows_are_the_agent_loops_prompts_and_replaying_them_wins(synthetic):
    rows, _, _ = synthetic
    game = make_game("synthetic")
    for turns in by_episode(rows):
        assert replay(game, turns, SETTINGS, check_expert=True).won


def test_parquet_round_trip(synthetic):
    rows, _, path = synthetic
    assert path.name == "sft.parquet"
    assert load_sft_rows(path) == rows
    assert load_sft_rows(path.parent) == rows


def test_history_and_turn_limit_settings_reach_the_prompt():
    rows, _ = expert_rows("synthetic/train", EpisodeSettings(max_turns=12, history_turns=0), limit=1)
    assert all("Recent turns" not in r["messages"][1]["content"] for r in rows)
    assert "Turn 3 of 12." in rows[2]["messages"][1]["content"]


def test_episodes_the_expert_does_not_win_are_left_out_and_counted():
    # corridor-5 needs at least 5 moves: a 3-turn limit makes every expert episode a loss
    rows, report = expert_rows("synthetic/train", EpisodeSettings(max_turns=3), limit=2)
    assert rows == [] and report.won == 0 and report.episodes == 2
    assert [lost["reason"] for lost in report.lost] == ["not won after 3 turns (max_turns=3)"] * 2
    with pytest.raises(ValueError, match="no expert episode was won"):
        write_sft(rows, "/nonexistent-never-written")


def test_exploring_expert_mixes_in_random_admissible_actions_reproducibly():
    clean, _ = expert_rows("synthetic/train", SETTINGS, limit=16)
    noisy, report = expert_rows("synthetic/train", SETTINGS, limit=16, explore=0.5, seed=3)
    again, _ = expert_rows("synthetic/train", SETTINGS, limit=16, explore=0.5, seed=3)
    other, _ = expert_rows("synthetic/train", SETTINGS, limit=16, explore=0.5, seed=4)
    assert noisy == again and noisy != other
    assert report.won >= 14  # random moves only cost time in the corridor; the expert recovers
    # every noisy action is admissible; more turns than the clean expert, and some of them not its choice
    game = make_game("synthetic")
    off_expert = 0
    for turns in by_episode(noisy):
        spec = turns[0]["extra_info"]
        game.reset(spec["task"], spec["variation"], spec["seed"])
        for row in turns:
            action = parse_action(row["messages"][-1]["content"])
            assert action in game.admissible_actions()
            off_expert += action != game.expert_action()
            game.step(action)
    assert len(noisy) > len(clean) and off_expert > 0.2 * len(noisy)
    with pytest.raises(ValueError, match="replays a fixed plan"):
        from env_adapters.expert import expert_policy
        expert_policy("sciworld", type("G", (), {"gold_actions": lambda self: []})(), explore=0.1)


def test_bad_input_names_the_problem(tmp_path):
    with pytest.raises(KeyError, match="no expert for SFT data"):
        expert_method("chess", object())
    with pytest.raises(AttributeError, match="has no method expert_action"):
        expert_method("synthetic", object())
    with pytest.raises(ValueError, match="--limit 0"):
        expert_rows("synthetic/train", limit=0)
    with pytest.raises(KeyError, match="unknown task set"):
        expert_rows("synthetic/nope")
    with pytest.raises(FileNotFoundError, match="python -m env_adapters.expert"):
        load_sft_rows(tmp_path)


def test_verl_multiturn_sft_dataset_loads_the_file_with_the_tiny_tokenizer(synthetic, tmp_path):
    from omegaconf import OmegaConf
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    from verl_epo.embedded.tiny_model import read_corpus, train_tokenizer

    corpus = tmp_path / "corpus.txt"
    subprocess.run([sys.executable, "-m", "env_adapters.corpus", "--games", "synthetic", "--out", str(corpus),
                    "--episodes", "20"], check=True, capture_output=True)
    tokenizer = train_tokenizer(read_corpus([corpus]), vocab_size=1000)
    tokenizer.save_pretrained(tmp_path / "tok")

    rows, _, path = synthetic
    config = OmegaConf.create({"max_length": 1024, "truncation": "error", "messages_key": "messages"})
    dataset = MultiTurnSFTDataset(str(path), tokenizer, config)
    assert len(dataset) == len(rows)
    for index in (0, 7, len(rows) - 1):
        item = dataset[index]
        ids, mask = item["input_ids"], item["loss_mask"]
        real = item["attention_mask"].bool()
        text = tokenizer.apply_chat_template(rows[index]["messages"], tokenize=False)
        assert tokenizer.decode(ids[real]) == text
        # verl trains on the assistant answer and its end-of-turn marker only
        assert tokenizer.decode(ids[mask.bool()]) == rows[index]["messages"][-1]["content"] + "<|im_end|>\n"


def test_alfworld_planner_rows_replay_to_a_win():
    settings = EpisodeSettings(max_turns=30, history_turns=3)
    rows, report = expert_rows("alfworld/train-small", settings, limit=3)
    assert report.won == report.episodes == 3, report.lost
    game = make_game("alfworld")
    try:
        for turns in by_episode(rows):
            assert replay(game, turns, settings).won
    finally:
        game.close()


def test_sciworld_gold_rows_replay_to_a_win_and_long_gold_paths_are_counted():
    settings = EpisodeSettings(max_turns=30, history_turns=3)
    # boil variation 0's gold path needs more than 30 turns; variation 1's fits
    rows, report = expert_rows("sciworld/l0-train-small", settings, limit=2)
    assert report.episodes == 2 and report.won == 1
    assert [(lost["task"], lost["reason"]) for lost in report.lost] == [
        ("boil", "not won after 30 turns (max_turns=30)")]
    game = make_game("sciworld")
    try:
        for turns in by_episode(rows):
            assert replay(game, turns, settings, exact=False).won
    finally:
        game.close()

"""verl parquet files for task sets: read back with pandas and with verl's own RLHFDataset."""

import subprocess
import sys

import pandas as pd
import pytest

from env_adapters import task_set
from env_adapters.corpus import write_corpus
from env_adapters.dataset import build_dataset, main
from env_adapters.synthetic import CorridorGame


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    subprocess.run([sys.executable, "-m", "env_adapters.dataset", "--train-set", "synthetic/train",
                    "--val-set", "synthetic/val", "--out", str(out)], check=True)
    return out


def test_rows_name_each_task_instance(data_dir):
    train = pd.read_parquet(data_dir / "train.parquet")
    val = pd.read_parquet(data_dir / "val.parquet")
    specs = task_set("synthetic/train")
    assert len(train) == len(specs) == 64 and len(val) == 16
    assert set(train.columns) >= {"data_source", "prompt", "agent_name", "reward_model",
                                  "extra_info"}
    for i, (row, spec) in enumerate(zip(train.itertuples(), specs, strict=True)):
        info = row.extra_info
        assert (info["game"], info["task"], info["variation"], info["seed"], info["task_type"]) \
            == (spec.game, spec.task, spec.variation, spec.seed, spec.task_type)
        assert info["index"] == i and info["split"] == "train"
        assert row.agent_name == "text_game" and row.data_source == "synthetic/train"
        assert row.prompt[0]["role"] == "user" and spec.task in row.prompt[0]["content"]
    assert list(val.extra_info.map(lambda e: e["split"]).unique()) == ["val"]


def test_a_row_resets_the_same_game(data_dir):
    info = pd.read_parquet(data_dir / "val.parquet").extra_info[3]
    a, b = CorridorGame(), CorridorGame()
    sa = a.reset(info["task"], int(info["variation"]), int(info["seed"]))
    sb = b.reset(info["task"], int(info["variation"]), int(info["seed"]))
    assert sa.observation == sb.observation and a.expert_action() == b.expert_action()


def test_fields_survive_verl_rlhf_dataset(data_dir, tmp_path):
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn
    from verl.utils.tokenizer.tokenizer import hf_tokenizer

    from verl_epo.embedded.tiny_model import build_tiny_model

    corpus = tmp_path / "corpus.txt"
    write_corpus(["synthetic"], corpus, episodes=10)
    build_tiny_model([corpus], tmp_path / "model", vocab_size=500)
    tok = hf_tokenizer(str(tmp_path / "model"))
    config = OmegaConf.create({"max_prompt_length": 256, "cache_dir": str(tmp_path / "cache"),
                               "filter_overlong_prompts_workers": 1})
    dataset = RLHFDataset(str(data_dir / "train.parquet"), tok, config)
    assert len(dataset) == 64  # nothing filtered as overlong
    item = dataset[10]
    spec = task_set("synthetic/train")[10]
    assert item["index"] == 10 and item["agent_name"] == "text_game"
    assert item["data_source"].startswith("synthetic/")
    assert {k: item["extra_info"][k] for k in ("game", "task", "variation", "seed", "task_type")} \
        == spec.to_row()
    assert item["raw_prompt"][0]["content"] == item["prompt"][0]["content"]
    batch = collate_fn([dataset[i] for i in range(4)])
    assert [e["seed"] for e in batch["extra_info"]] == [t.seed for t in task_set(
        "synthetic/train")[:4]]
    assert list(batch["agent_name"]) == ["text_game"] * 4


def test_limit_and_repeat(tmp_path):
    written = build_dataset(tmp_path, train_set="synthetic/train", limit=3, repeat=2)
    assert set(written) == {"train"}
    train = pd.read_parquet(written["train"])
    assert list(train.extra_info.map(lambda e: e["variation"])) == [0, 0, 1, 1, 2, 2]
    assert list(train.extra_info.map(lambda e: e["index"])) == list(range(6))


def test_bad_options_are_explained(tmp_path):
    with pytest.raises(ValueError, match="--train-set"):
        main(["--out", str(tmp_path)])
    with pytest.raises(KeyError, match="registered sets"):
        main(["--train-set", "nosuch/train", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--repeat"):
        main(["--train-set", "synthetic/train", "--repeat", "0", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--limit"):
        main(["--train-set", "synthetic/train", "--limit", "0", "--out", str(tmp_path)])

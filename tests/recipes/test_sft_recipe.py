"""The cold-start SFT recipe composes with verl's SFT trainer config and reads the expert files' column."""

from pathlib import Path

from hydra import compose, initialize_config_dir

SFT_DIR = Path(__file__).resolve().parents[2] / "recipes" / "sft"


def test_cold_start_recipe_composes_with_verls_sft_config():
    with initialize_config_dir(config_dir=str(SFT_DIR), version_base=None):
        config = compose(config_name="cold_start", overrides=["data.train_files=x.parquet", "model.path=m"])
    assert config.data.messages_key == "messages"  # the column env_adapters.expert writes
    assert config.data.max_length >= 2048 + 512  # one turn: prompt budget + response budget
    assert config.model.path == "m" and config.engine.strategy.startswith("fsdp")

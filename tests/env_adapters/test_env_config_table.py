"""Every key of the agent loop's ``env:`` section is in README's ``env:`` table, with its default."""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

from env_adapters.agent_loop import env_settings

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_env_table() -> dict[str, str]:
    text = README.read_text()
    section = text[text.index("`env:` (the `text_game` agent loop"):]
    rows = re.findall(r"^\| `([\w.<>]+)` \| ([^|]+) \|", section.split("\n\n", 2)[1], re.MULTILINE)
    return {key: default.strip() for key, default in rows}


def as_text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_every_env_key_is_documented_with_its_default():
    settings, game_settings = env_settings(OmegaConf.create({"env": {}}))
    defaults = {**vars(settings), **vars(game_settings)}
    table = readme_env_table()
    documented = {key.split(".")[0]: default for key, default in table.items()}
    assert set(defaults) == set(documented), (sorted(defaults), sorted(documented))
    for key, value in defaults.items():
        shown = documented[key]
        assert shown in (as_text(value), str(value)), f"env.{key}: README says {shown}, the code {value!r}"

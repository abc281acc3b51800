"""recipes/README.md agrees with the code: its "EPO in your own verl recipe" snippet turns EPO on in
verl's own config, and its table names every GPU recipe, its CPU twin and the test that trains it."""

from __future__ import annotations

import re

from test_recipes import GPU_RECIPES, README, RECIPES, compose


def test_epo_in_your_own_verl_recipe(tmp_path):
    """The README's two lines turn EPO on in verl's own ppo_trainer config."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir, initialize_config_module

    from verl_epo.trainer import load_epo_config

    base = ["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"]
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        config = hydra_compose(config_name="ppo_trainer",
                               overrides=base + ["trainer.v1.trainer_mode=epo", "+epo.alpha=0.05"])
    epo = load_epo_config(config)
    assert config.trainer.v1.trainer_mode == "epo"
    assert epo.enable and epo.alpha == 0.05 and epo.entropy_coef == 0.001 and epo.kappa_high == 2.0

    text = README.read_text()
    section = text[text.index("## EPO in your own verl recipe"):]
    snippet = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    (tmp_path / "mine.yaml").write_text(
        "hydra:\n  searchpath:\n    - pkg://verl.trainer.config\n"
        "defaults:\n  - ppo_trainer\n  - _self_\n" + snippet
    )
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        config = hydra_compose(config_name="mine", overrides=base)
    epo = load_epo_config(config)
    assert config.trainer.v1.trainer_mode == "epo" and epo.enable and epo.alpha == 0.05


def test_readme_table_names_every_recipe_and_its_twin():
    """recipes/README.md's table has a row for every GPU recipe, naming its CPU twin and
    the test file that trains it; every twin and test file it names exists."""
    rows = {}
    for line in README.read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.split("|")[1:-1]]
        if len(cells) == 7 and cells[0] in GPU_RECIPES:
            rows[cells[0]] = cells
    assert set(rows) == set(GPU_RECIPES), f"rows missing: {sorted(set(GPU_RECIPES) - set(rows))}"
    for name, cells in rows.items():
        twin, trained_in = cells[5], cells[6]
        assert compose.gpu_twin(twin) == name, f"{twin} is not the CPU twin of {name}"
        test_file = trained_in.split("`")[0].split(" ")[0]
        assert (RECIPES.parent / test_file).is_file(), test_file

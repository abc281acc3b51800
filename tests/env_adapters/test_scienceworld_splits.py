"""ScienceWorld's named task sets: sizes from the paper, the small-set rule, and the committed
split index checked against a real JVM."""

import subprocess
import sys
from collections import Counter

import pytest

from env_adapters import TaskSpec, task_set, task_set_names
from env_adapters.sciworld import splits

PAPER_SIZES = {
    "sciworld/l0-train": 3322,
    "sciworld/l0-test": 1661,
    "sciworld/l1-test": 1684,
    "sciworld/l2-test": 549,
}
L2_HELD_OUT_NAMES = {
    "change-the-state-of-matter-of",
    "chemistry-mix-paint-tertiary-color",
    "find-plant",
    "grow-plant",
    "identify-life-stages-2",
    "inclined-plane-friction-unnamed-surfaces",
    "lifespan-longest-lived-then-shortest-lived",
    "measure-melting-point-unknown-substance",
    "mendelian-genetics-unknown-plant",
    "test-conductivity-of-unknown-substances",
}


@pytest.mark.parametrize("name,size", sorted(PAPER_SIZES.items()))
def test_paper_split_sizes(name, size):
    specs = task_set(name)
    assert len(specs) == size
    assert len(set(specs)) == size
    assert all(isinstance(s, TaskSpec) and s.game == "sciworld" for s in specs)
    assert all(s.task_type == s.task and s.seed == 0 for s in specs)


def test_official_totals_and_l0_excludes_use_thermometer():
    index = splits.split_index()["tasks"]
    assert len(index) == 30
    assert [sum(len(t[s]) for t in index) for s in ("train", "dev", "test")] == [3592, 1796, 1819]
    for name in ("sciworld/l0-train", "sciworld/l0-test", "sciworld/l1-test"):
        types = {s.task for s in task_set(name)}
        assert len(types) == 29 and "use-thermometer" not in types
    for task in index:  # the three official splits partition the variations
        everything = task["train"] + task["dev"] + task["test"]
        assert sorted(everything) == list(range(task["max_variations"]))


def test_l2_holds_out_ten_types():
    test_types = {s.task for s in task_set("sciworld/l2-test")}
    train_types = {s.task for s in task_set("sciworld/l2-train")}
    assert test_types == L2_HELD_OUT_NAMES
    assert len(train_types) == 19 and not train_types & test_types
    assert "use-thermometer" not in train_types
    l0_train = set(task_set("sciworld/l0-train"))
    assert set(task_set("sciworld/l2-train")) == {s for s in l0_train if s.task in train_types}
    assert len(task_set("sciworld/l2-train")) == 3322 - 1080


@pytest.mark.parametrize("full", ["l0-train", "l0-test", "l1-test", "l2-test"])
def test_small_sets_take_first_two_per_type(full):
    big = task_set(f"sciworld/{full}")
    small = task_set(f"sciworld/{full}-small")
    assert f"sciworld/{full}-small" in task_set_names()
    types = Counter(s.task for s in big)
    assert Counter(s.task for s in small) == {t: min(2, n) for t, n in types.items()}
    for task in types:
        first_two = sorted(s.variation for s in big if s.task == task)[:2]
        assert [s.variation for s in small if s.task == task] == first_two
    assert small == task_set(f"sciworld/{full}-small")  # fixed: the same list every time


def test_sets_are_ordered_by_task_index_then_variation():
    order = {name: i for i, name in enumerate(splits.task_names())}
    specs = task_set("sciworld/l1-test")
    keys = [(order[s.task], s.variation) for s in specs]
    assert keys == sorted(keys)


def test_building_a_set_starts_no_jvm():
    code = (
        "import sys; from env_adapters import task_set; "
        "n = len(task_set('sciworld/l0-train')); "
        "print(n, 'scienceworld' in sys.modules, 'py4j' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["3322", "False", "False"]


def test_committed_index_matches_the_simulator():
    fresh = splits.read_from_simulator()
    assert fresh["tasks"] == splits.split_index()["tasks"]
    assert fresh["scienceworld_version"] == splits.split_index()["scienceworld_version"]

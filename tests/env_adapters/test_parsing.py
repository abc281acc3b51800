import random
import string

import pytest

from env_adapters.parsing import MAX_ACTION_CHARS, parse_action

ADMISSIBLE = ["go north", "go south", "open door", "open door with key"]


def test_strict_reads_the_first_tag():
    assert parse_action("I think <action>Go North</action> then <action>x</action>") == "go north"


def test_strict_rejects_free_text_and_empty_tags():
    assert parse_action("go north", ADMISSIBLE, "strict") is None
    assert parse_action("<action>   </action>", ADMISSIBLE, "strict") is None
    assert parse_action("", ADMISSIBLE, "strict") is None


def test_lenient_maps_free_text_to_the_longest_named_action():
    assert parse_action("I will open door with key now", ADMISSIBLE, "lenient") == "open door with key"
    assert parse_action("maybe go south", ADMISSIBLE, "lenient") == "go south"
    assert parse_action("dance", ADMISSIBLE, "lenient") is None
    assert parse_action("go north", None, "lenient") is None


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="parser mode"):
        parse_action("x", None, "fuzzy")


@pytest.mark.parametrize("mode", ["strict", "lenient"])
def test_fuzz_never_raises_and_bounds_length(mode):
    rng = random.Random(0)
    alphabet = string.printable + "äöü漢字<>/\x00"
    for _ in range(1000):
        n = rng.choice([0, 1, 10, 200, 10_000])
        text = "".join(rng.choice(alphabet) for _ in range(n))
        if rng.random() < 0.3:
            text = f"<action>{text}</action>"
        action = parse_action(text, ADMISSIBLE, mode)
        assert action is None or (isinstance(action, str) and 0 < len(action) <= MAX_ACTION_CHARS)

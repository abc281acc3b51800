"""1,000 malformed or random actions across ScienceWorld tasks: nothing raises, and every input
the simulator rejects is reported invalid (checked against the simulator's clock: a rejected input
takes no move)."""

import random
import string
import time

from env_adapters import make_game

TASKS = [("boil", 14), ("find-animal", 150), ("chemistry-mix", 16), ("power-component", 10),
         ("grow-plant", 62)]
N_ACTIONS = 1000
TEMPLATES = ["open {}", "close {}", "look at {}", "pick up {}", "focus on {}", "go to {}",
             "teleport to {}", "move {} to {}", "pour {} in {}", "use {} on {}", "activate {}",
             "mix {}", "read {}", "connect {} to {}"]
WORDS = ["door", "kitchen", "sink", "water", "apple", "the", "thermometer", "pot", "stove", "cup",
         "greenhouse", "seed", "orange", "paint", "wire", "battery", "OBJ", "", "hallway"]


def garbage(rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        return rng.choice(["", " ", "\n", "\t\t", "\r\n", "\x00", "\x1b[31m"])
    if kind == 1:
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(1, 40)))
    if kind == 2:
        return "zq" + "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randrange(20)))
    if kind == 3:
        return rng.choice(string.ascii_letters) * rng.choice([1000, 10_000])
    if kind == 4:
        return "".join(chr(rng.randrange(0x80, 0x2FFF)) for _ in range(rng.randrange(1, 30)))
    if kind == 5:
        return rng.choice(["%s %d {0} {}", "'; DROP TABLE x; --", "look at {", "\\", '"quoted"',
                           "-1", "99999999999999999999", "0", "3", "nan", "None"])
    if kind == 6:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 6)))
    template = rng.choice(TEMPLATES)
    return template.format(*(rng.choice(WORDS) for _ in range(template.count("{}"))))


def test_fuzz_no_exception_and_rejections_are_invalid():
    rng = random.Random(0)
    game = make_game("sciworld", step_timeout=30)
    start = time.time()
    counts = {"valid": 0, "invalid": 0, "episodes": 0}
    try:
        state = None
        for i in range(N_ACTIONS):
            if state is None or state.done or i % 200 == 0:
                task, variation = TASKS[(i // 200) % len(TASKS)]
                state = game.reset(task, variation)
                counts["episodes"] += 1
            before = state.info.get("moves", 0)
            was_asking = bool(state.info.get("ambiguous"))
            action = garbage(rng)
            state = game.step(action)
            assert isinstance(state.valid_action, bool) and "failure" not in state.info, action
            counts["valid" if state.valid_action else "invalid"] += 1
            if not state.valid_action and not was_asking:
                # a rejected input takes no move (after a question, any answer takes one)
                assert state.info["moves"] == before, (action, state.observation)
            if action.startswith("zq") or len(action) >= 1000:
                assert not state.valid_action, (action[:50], state.observation)
    finally:
        game.close()
    elapsed = time.time() - start
    print(f"fuzz: {counts}, {elapsed:.1f} s")
    assert counts["invalid"] > 600 and counts["valid"] > 20
    assert elapsed < 120

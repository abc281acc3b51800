"""A built-in long-horizon text game: walk a corridor of rooms by following signs.

Task ``corridor-N`` is a corridor of N rooms (designed for N = 5..50). Each room shows a sign
pointing north, south, east or west; ``go <that direction>`` enters the next room. Some exits are
behind a closed door that must be opened first (``open door``). Walking any other way wastes a
turn ("the passage loops back") without ending the game, so the only failure is running out of
steps. The episode is won only when the last room is left; it ends on a win or when the game's
own step limit (``step_factor * N`` steps, every action it receives counted) is reached. A turn whose
text holds no parsable action never reaches the game and counts only against the agent loop's
``env.max_turns``.

Why this shape: the right action always follows from the current observation alone (copy the
sign's direction, or open the door), so a tiny transformer can learn it; and because wrong valid
actions only cost time, a uniformly random admissible policy still wins sometimes (about 22% at
the default ``corridor-6``, 17-25% over ``synthetic/train``; measured in
``tests/env_adapters/test_synthetic.py``), which GRPO needs to see groups that mix successes and
failures.

Task ``cascade-N`` (not in the corridor's training sets) is the failure EPO is about: an early
commitment that looks good and fails late. Room 1 is a fork: its sign points one way and "a dark
passage" leads another. The sign starts a lure branch that looks like any corridor (rooms 2..N,
signs to follow) and ends at a bricked-up exit after the last room: the episode is lost. Only the
passage leads to the end. A policy that has learned "follow the sign" (the corridor's expert)
loses every cascade episode, and only after N turns; the game's own expert takes the passage.
The task description says that a sign may lead to a dead end.

Determinism: the layout (signs, doors, the fork) depends only on (task kind, N, variation); the
room descriptions only on the seed. The same (task, variation, seed) always plays the same game.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from env_adapters.base import GameState, TaskSpec, TextGame, register_game, register_task_set

DIRECTIONS = ("north", "south", "east", "west")
OPEN_DOOR = "open door"
DEFAULT_LENGTH = 6
MIN_LENGTH, MAX_LENGTH = 2, 100
CORRIDOR, CASCADE = "corridor", "cascade"
_TASK_RE = re.compile(r"^(corridor|cascade)(?:-(\d+))?$")

_PLACES = (
    "a dusty hall",
    "a narrow cave",
    "a cold cellar",
    "a bright gallery",
    "a quiet library",
    "a damp tunnel",
    "an empty kitchen",
    "a small chapel",
    "a stone stairwell",
    "a warm workshop",
    "a long balcony",
    "a dark storeroom",
)


def _rng(*parts: object) -> random.Random:
    # hashlib, not hash(): Python salts str hashes per process, and games must replay exactly
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def parse_task(task: str) -> tuple[str, int | None]:
    """The kind and length a task names (``"cascade-8"`` -> ("cascade", 8), ``"corridor"`` ->
    ("corridor", None): the game's default length)."""
    match = _TASK_RE.match(task.strip()) if isinstance(task, str) else None
    if match is None:
        raise ValueError(
            f"unknown synthetic task {task!r}; use 'corridor-N' or 'cascade-N' with N the number "
            f"of rooms (e.g. 'corridor-8'), or 'corridor' for {DEFAULT_LENGTH} rooms"
        )
    length = int(match.group(2)) if match.group(2) else None
    if length is not None and not MIN_LENGTH <= length <= MAX_LENGTH:
        raise ValueError(
            f"corridor length {length} in task {task!r} is out of range; "
            f"use {MIN_LENGTH}..{MAX_LENGTH} rooms (the game is designed for 5..50)"
        )
    return match.group(1), length


def task_type_of(kind: str, length: int) -> str:
    """The task type used for per-type metrics: ``cascade``, or a corridor's length bucket: short
    (<=6 rooms), medium (<=15), long."""
    if kind == CASCADE:
        return CASCADE
    if length <= 6:
        return "short"
    return "medium" if length <= 15 else "long"


@dataclass(frozen=True)
class Room:
    """One room: where its sign points, whether a door blocks that exit, how it looks, and (at a
    cascade's fork) where the unmarked passage leads."""

    sign: str
    door: bool
    place: str
    passage: str = ""


def build_layout(length: int, variation: int, seed: int, door_prob: float,
                 kind: str = CORRIDOR) -> tuple[list[Room], list[Room]]:
    """The rooms for (kind, length, variation), described with words drawn from ``seed``:
    (the way to the end, the cascade's lure branch: rooms 2..N, empty for a corridor)."""
    layout_rng = _rng(f"{kind}-layout", length, variation)
    words_rng = _rng("corridor-words", seed)

    def room() -> Room:
        sign = layout_rng.choice(DIRECTIONS)
        door = layout_rng.random() < door_prob
        return Room(sign=sign, door=door, place=words_rng.choice(_PLACES))

    rooms = [room() for _ in range(length)]
    if kind == CORRIDOR:
        return rooms, []
    passage = layout_rng.choice([d for d in DIRECTIONS if d != rooms[0].sign])
    rooms[0] = Room(sign=rooms[0].sign, door=False, place=rooms[0].place, passage=passage)
    return rooms, [room() for _ in range(length - 1)]


def normalize_action(action: object) -> str:
    """Lower-case, single-spaced form of an action; non-strings become ''."""
    return " ".join(action.lower().split()) if isinstance(action, str) else ""


@register_game("synthetic")
class CorridorGame(TextGame):
    """The corridor game behind the ``TextGame`` interface.

    Args:
        length: rooms for the task ``"corridor"`` (a length in the task name wins).
        step_factor: the step limit is ``step_factor * length`` actions, invalid ones included.
        door_prob: chance that a room's exit is behind a closed door.
    """

    def __init__(
        self, length: int = DEFAULT_LENGTH, step_factor: float = 3.0, door_prob: float = 0.1
    ):
        if not MIN_LENGTH <= int(length) <= MAX_LENGTH:
            raise ValueError(f"length={length} is out of range; use {MIN_LENGTH}..{MAX_LENGTH}")
        if step_factor < 1:
            raise ValueError(f"step_factor={step_factor} must be >= 1 or even an expert cannot win")
        if not 0.0 <= door_prob <= 1.0:
            raise ValueError(f"door_prob={door_prob} must be a probability in [0, 1]")
        self.default_length = int(length)
        self.step_factor = float(step_factor)
        self.door_prob = float(door_prob)
        self._rooms: list[Room] = []
        self._lure: list[Room] = []  # a cascade's lure branch (rooms 2..N)
        self._on_lure = False
        self._kind = CORRIDOR
        self._pos = 0
        self._door_open = False
        self._steps = 0
        self._max_steps = 0
        self._done = True
        self._won = False
        self._length = 0

    # --- episode -------------------------------------------------------------------------
    def reset(self, task: str = "corridor", variation: int = 0, seed: int = 0) -> GameState:
        self._kind, named = parse_task(task)
        length = named or self.default_length
        self._length = length
        self._rooms, self._lure = build_layout(length, int(variation), int(seed), self.door_prob, self._kind)
        self._on_lure = False
        self._pos = 0
        self._door_open = False
        self._steps = 0
        self._max_steps = max(length, int(round(self.step_factor * length)))
        self._done = False
        self._won = False
        return GameState(observation=self._describe(), info=self._info())

    def step(self, action: str) -> GameState:
        if not self._rooms:
            raise RuntimeError("step() before reset(): call reset(task, variation, seed) first")
        if self._done:
            return GameState("The episode is over.", done=True, won=self._won, valid_action=False,
                             score=self._score(), info=self._info())
        self._steps += 1
        act = normalize_action(action)
        valid = act in self.admissible_actions()
        if not valid:
            shown = act if len(act) <= 40 else act[:40] + "..."
            text = f"Nothing happens: '{shown}' is not a valid action here."
        else:
            text = self._apply(act)
        if not self._won and self._steps >= self._max_steps:
            self._done = True
            text += " You are too tired to go on. The game is over."
        return GameState(text, done=self._done, won=self._won, valid_action=valid,
                         score=self._score(), info=self._info())

    def _room(self) -> Room:
        return self._lure[self._pos - 1] if self._on_lure else self._rooms[self._pos]

    def _apply(self, act: str) -> str:
        room = self._room()
        if act == OPEN_DOOR:
            self._door_open = True
            return f"You open the door to the {room.sign}."
        direction = act.split()[1]
        if direction not in (room.sign, room.passage):
            return f"You walk {direction}, but the passage loops back. {self._describe()}"
        if direction == room.sign and room.door and not self._door_open:
            return f"The door to the {direction} is closed. {self._describe()}"
        if room.passage:  # a cascade's fork: the sign starts the lure branch
            self._on_lure = direction == room.sign
        self._pos += 1
        self._door_open = False
        if self._pos == self._length:
            self._done = True
            if self._on_lure:
                return "Behind the last exit the way is bricked up: a dead end. The game is over."
            self._won = True
            return "You step through the last exit and reach the end of the corridor. You win!"
        return f"You walk {direction}. {self._describe()}"

    # --- views ---------------------------------------------------------------------------
    def _describe(self) -> str:
        room = self._room()
        text = f"Room {self._pos + 1} of {self._length}: {room.place}."
        if room.passage:  # before the sign: a model that copies the last direction named takes the lure
            text += f" A dark passage leads {room.passage}."
        text += f" A sign points {room.sign}."
        if room.door:
            state = "open" if self._door_open else "closed"
            text += f" The door to the {room.sign} is {state}."
        return text

    def _score(self) -> float:
        # progress along the corridor, informational only (success is ``won``)
        return self._pos / self._length if self._length else 0.0

    def _info(self) -> dict:
        info = {"room": self._pos, "length": self._length, "steps": self._steps, "max_steps": self._max_steps}
        if self._kind == CASCADE:
            info["lure"] = self._on_lure  # on the sign's branch, which ends at the dead end
        return info

    @property
    def task_description(self) -> str:
        if self._kind == CASCADE:
            return (f"Walk through a corridor of {self._length} rooms to its end. Signs show a way, "
                    f"but one may lead to a dead end; open a closed door first.")
        return (f"Walk through a corridor of {self._length} rooms to its end. "
                f"In each room, go the way the sign points; open a closed door first.")

    @property
    def task_type(self) -> str:
        return task_type_of(self._kind, self._length) if self._length else ""

    @property
    def max_steps(self) -> int:
        """The game's own step limit for the current episode."""
        return self._max_steps

    def admissible_actions(self) -> list[str] | None:
        if self._done or not self._rooms:
            return []
        actions = [f"go {d}" for d in DIRECTIONS]
        room = self._room()
        if room.door and not self._door_open:
            actions.append(OPEN_DOOR)
        return actions

    def expert_action(self) -> str:
        """The optimal action now: at a cascade's fork take the passage; else open a closed door on
        the way, else follow the sign."""
        if self._done or not self._rooms:
            raise RuntimeError("expert_action() needs a running episode; call reset() first")
        room = self._room()
        if room.passage:
            return f"go {room.passage}"
        if room.door and not self._door_open:
            return OPEN_DOOR
        return f"go {room.sign}"


# --- fixed task sets ------------------------------------------------------------------------
def _corridor_tasks(lengths: list[int], per_length: int, first_variation: int,
                    first_seed: int, kind: str = CORRIDOR) -> list[TaskSpec]:
    tasks = []
    for length in lengths:
        for i in range(per_length):
            tasks.append(TaskSpec(game="synthetic", task=f"{kind}-{length}",
                                  variation=first_variation + i, seed=first_seed + i,
                                  task_type=task_type_of(kind, length)))
    return tasks


@register_task_set("synthetic/train")
def train_tasks() -> list[TaskSpec]:
    """64 training tasks: 16 layouts each of 5, 6, 7 and 8 rooms (variations 0-15)."""
    return _corridor_tasks([5, 6, 7, 8], per_length=16, first_variation=0, first_seed=0)


@register_task_set("synthetic/val")
def val_tasks() -> list[TaskSpec]:
    """16 held-out tasks of the same lengths; variations and seeds disjoint from training."""
    return _corridor_tasks([5, 6, 7, 8], per_length=4, first_variation=1000, first_seed=1000)


@register_task_set("synthetic/long")
def long_tasks() -> list[TaskSpec]:
    """16 long-horizon tasks (20, 30, 40, 50 rooms) for entropy-dynamics runs and evaluation."""
    return _corridor_tasks([20, 30, 40, 50], per_length=4, first_variation=2000, first_seed=2000)


@register_task_set("synthetic/cascade-train")
def cascade_train_tasks() -> list[TaskSpec]:
    """64 cascade tasks (5-8 rooms, variations 0-15): a fork whose sign leads to a dead end."""
    return _corridor_tasks([5, 6, 7, 8], per_length=16, first_variation=0, first_seed=0, kind=CASCADE)


@register_task_set("synthetic/cascade-val")
def cascade_val_tasks() -> list[TaskSpec]:
    """16 held-out cascade tasks of the same lengths (variations and seeds from 1000)."""
    return _corridor_tasks([5, 6, 7, 8], per_length=4, first_variation=1000, first_seed=1000, kind=CASCADE)

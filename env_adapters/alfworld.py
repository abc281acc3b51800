"""ALFWorld on TextWorld's text (PDDL) engine, behind the project's ``TextGame`` interface.

Data: ``ALFWORLD_DATA`` names the folder holding
``json_2.1.1/{train,valid_seen,valid_unseen}/<task>/<trial>/game.tw-pddl`` and
``logic/alfred.{pddl,twl2}``; when unset, ``../shared/data/alfworld`` next to the repository is
used if it exists. A task is a game file path relative to that folder.

The shipped games embed their own PDDL domain and grammar (pre-0.4: ``put X in/on Y``); the
admissible commands always come from the game file, so the prompt shows whatever grammar it uses.
The engine is deterministic: ``seed`` is accepted for the interface and has no effect.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import types
from functools import lru_cache
from pathlib import Path
from typing import Any

from env_adapters.base import GameState, TaskSpec, TextGame, register_game, register_task_set

DATA_ENV = "ALFWORLD_DATA"
GAME_FILE = "game.tw-pddl"
SPLITS = ("train", "valid_seen", "valid_unseen")
LOGIC_FILES = ("alfred.pddl", "alfred.twl2")
_DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "alfworld"
_LAYOUT = (
    "expected layout: <ALFWORLD_DATA>/json_2.1.1/{train,valid_seen,valid_unseen}/<task>/<trial>/"
    "game.tw-pddl and <ALFWORLD_DATA>/logic/alfred.{pddl,twl2}"
)

# ALFRED folder prefix -> the project's task-type name (the 6 ALFWorld task families).
TASK_TYPES = {
    "pick_and_place_simple": "pick_and_place",
    "look_at_obj_in_light": "look_at_obj_in_light",
    "pick_clean_then_place_in_recep": "pick_clean_then_place",
    "pick_heat_then_place_in_recep": "pick_heat_then_place",
    "pick_cool_then_place_in_recep": "pick_cool_then_place",
    "pick_two_obj_and_place": "pick_two_obj_and_place",
}
INVALID_FEEDBACK = "Nothing happens."  # what the engine itself answers to an unknown command
_GOAL_MARKER = "Your task is to: "


class AlfworldDataError(FileNotFoundError):
    """The ALFWorld data folder is missing or incomplete."""


def data_dir() -> Path:
    """The validated ALFWorld data folder (``$ALFWORLD_DATA``, else the shared default)."""
    configured = os.environ.get(DATA_ENV)
    if configured:
        root, origin = Path(configured).expanduser(), f"{DATA_ENV}={configured}"
    else:
        root, origin = _DEFAULT_DATA, f"{DATA_ENV} is unset; default {_DEFAULT_DATA}"
    return _validated(str(root.resolve()), origin)


@lru_cache(maxsize=8)
def _validated(root_str: str, origin: str) -> Path:
    root = Path(root_str)
    problems = []
    if not root.is_dir():
        problems.append("the folder does not exist")
    else:
        for split in SPLITS:
            if next((root / "json_2.1.1" / split).glob(f"*/*/{GAME_FILE}"), None) is None:
                problems.append(f"no json_2.1.1/{split}/<task>/<trial>/{GAME_FILE}")
        for name in LOGIC_FILES:
            if not (root / "logic" / name).is_file():
                problems.append(f"no logic/{name}")
    if problems:
        raise AlfworldDataError(
            f"ALFWorld data not usable ({origin}): {'; '.join(problems)}. {_LAYOUT}. "
            f"Fix: set {DATA_ENV} to a folder with that layout (see docs/alfworld.md)."
        )
    return root


def task_type_of(task: str) -> str:
    """The task type of a game path, from its ALFRED task folder name (``<type>-<obj>-...``)."""
    folder = Path(task).parent.parent.name
    return TASK_TYPES.get(folder.split("-", 1)[0], "")


def _jericho_placeholder() -> types.ModuleType:
    """Stand-in for ``jericho``: TextWorld imports it at package import; only its Z-machine games
    use it, so ALFWorld runs without it."""
    module = types.ModuleType("jericho")
    module.UnsupportedGameWarning = type("UnsupportedGameWarning", (UserWarning,), {})
    module.TruncatedInputActionWarning = type("TruncatedInputActionWarning", (UserWarning,), {})

    def missing(name: str) -> Any:
        if name.startswith("__"):
            # introspection (inspect.getmodule, pickle, ...) asks modules for __file__ & co.
            raise AttributeError(name)
        raise ImportError(
            f"jericho.{name}: jericho is not installed; TextWorld's Z-machine games need it, "
            "ALFWorld's PDDL games do not"
        )

    module.__getattr__ = missing
    return module


# fast-downward's PDDL->SAS translator uses module-global options, swaps sys.stdout and sets
# sys.argv, and TextWorld's grammar parser is one shared object per process: resets and steps of
# games in one process must not overlap between threads (isolated games each have a process).
_ENGINE_LOCK = threading.Lock()


class _MemoTranslator:
    """``fast_downward`` as TextWorld's PDDL logic sees it, with ``pddl2sas`` memoised.

    Every reset translates the game's PDDL twice (about 85% of reset time); the result depends
    only on the text, so replaying a game (a GRPO group) reuses it.
    """

    def __init__(self, module: Any) -> None:
        self._module = module
        self.pddl2sas = lru_cache(maxsize=8)(module.pddl2sas)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def _engine_modules() -> tuple[Any, Any, Any]:
    """Import TextWorld's PDDL engine lazily; returns (textworld, PddlEnv, AlfredDemangler)."""
    # alfworld reads (and creates) $ALFWORLD_DATA at import, so validate and set it first.
    os.environ[DATA_ENV] = str(data_dir())
    if "jericho" not in sys.modules and importlib.util.find_spec("jericho") is None:
        sys.modules["jericho"] = _jericho_placeholder()
    import textworld
    import textworld.envs.pddl.logic as pddl_logic
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
    from textworld.envs.pddl import PddlEnv

    with _ENGINE_LOCK:
        if not isinstance(pddl_logic.fast_downward, _MemoTranslator):
            pddl_logic.fast_downward = _MemoTranslator(pddl_logic.fast_downward)
    return textworld, PddlEnv, AlfredDemangler


@register_game("alfworld")
class AlfworldGame(TextGame):
    """One TextWorld PDDL engine that plays ALFWorld games, one episode per ``reset``.

    The engine is reused across episodes; resetting on the game already loaded skips the
    file parse (a GRPO group replays the same game).

    Args:
        max_steps: if set, the episode ends (not won) after this many steps; None leaves the
            turn limit to the agent loop.
    """

    def __init__(self, max_steps: int | None = None) -> None:
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer or None, got {max_steps!r}")
        self.max_steps = max_steps
        self._root = data_dir()
        textworld, pddl_env, demangler = _engine_modules()
        infos = textworld.EnvInfos(won=True, admissible_commands=True)
        self._env = demangler(shuffle=False)(pddl_env(infos))
        self._loaded: Path | None = None
        self._task = ""
        self._goal = ""
        self._admissible: list[str] = []
        self._steps = 0
        self._done = False
        self._won = False

    def _resolve(self, task: str) -> Path:
        path = Path(task)
        path = path if path.is_absolute() else self._root / path
        if path.name != GAME_FILE:
            path = path / GAME_FILE  # a trial folder names its game too
        if not path.is_file():
            raise FileNotFoundError(
                f"ALFWorld game {task!r} not found at {path}; a task is a game file path relative "
                f"to {DATA_ENV}={self._root}, e.g. a TaskSpec.task from task_set('alfworld/train')"
            )
        return path

    def reset(self, task: str, variation: int = 0, seed: int = 0) -> GameState:
        if variation != 0:
            raise ValueError(f"ALFWorld games have one variation (0), got variation={variation}")
        path = self._resolve(task)
        argv = list(sys.argv)
        try:
            with _ENGINE_LOCK:
                if path != self._loaded:
                    self._loaded = None  # a failed load must not leave a stale game marked current
                    self._env.load(str(path))
                    self._loaded = path
                state = self._env.reset()
        finally:
            sys.argv[:] = argv  # the translator overwrites the host program's arguments
        self._task = task
        self._admissible = list(state["admissible_commands"])
        intro = state.feedback.strip()
        self._goal = intro.split(_GOAL_MARKER, 1)[1].strip() if _GOAL_MARKER in intro else intro
        self._steps, self._done, self._won = 0, False, bool(state["won"])
        return GameState(observation=intro, won=self._won, score=float(self._won),
                         info={"game_file": str(path)})

    @staticmethod
    def normalize(action: str) -> str:
        """Lower-case and collapse white space: the engine's commands are lower-case words."""
        return " ".join(action.lower().split())

    def step(self, action: str) -> GameState:
        if self._loaded is None:
            raise RuntimeError("AlfworldGame.step called before reset(task=...)")
        if self._done:
            return GameState(observation="The episode is over.", done=True, won=self._won,
                             valid_action=False, score=float(self._won))
        self._steps += 1
        command = self.normalize(action) if isinstance(action, str) else ""
        if command in self._admissible:
            with _ENGINE_LOCK:
                state, _, _ = self._env.step(command)
            self._admissible = list(state["admissible_commands"])
            self._won = bool(state["won"])
            observation, valid = state.feedback.strip(), True
        else:
            # The engine would answer the same without changing state; skipping it saves a replan.
            observation, valid = INVALID_FEEDBACK, False
        out_of_steps = self.max_steps is not None and self._steps >= self.max_steps
        self._done = self._won or out_of_steps
        return GameState(observation=observation, done=self._done, won=self._won,
                         valid_action=valid, score=float(self._won),
                         info={"out_of_steps": True} if out_of_steps and not self._won else {})

    @property
    def task_description(self) -> str:
        return self._goal

    @property
    def task_type(self) -> str:
        return task_type_of(self._task) if self._task else ""

    def admissible_actions(self) -> list[str] | None:
        return list(self._admissible)

    def expert_actions(self) -> list[str]:
        """The fast-downward planner's plan from the current state (ALFWorld's PLANNER expert).

        Each command is in the game's own grammar, so replaying them in order wins the game.
        """
        if self._loaded is None:
            raise RuntimeError("AlfworldGame.expert_actions called before reset(task=...)")
        engine = self._env.unwrapped
        return list(engine._pddl_state.replan(engine._entity_infos))

    def close(self) -> None:
        self._env = None
        self._loaded = None


@lru_cache(maxsize=4)
def _split_games(root: Path, split: str) -> tuple[str, ...]:
    """Solvable game files of a split (the ones AlfredTWEnv loads), sorted, relative to ``root``."""
    games = []
    for path in sorted((root / "json_2.1.1" / split).glob(f"*/*/{GAME_FILE}")):
        if "movable" in str(path) or "Sliced" in str(path):  # ALFWorld's own exclusions
            continue
        if not task_type_of(str(path)):
            continue
        with open(path) as f:
            if not json.load(f).get("solvable", False):
                continue
        games.append(path.relative_to(root).as_posix())
    return tuple(games)


def alfworld_tasks(split: str, per_type: int | None = None) -> list[TaskSpec]:
    """The games of ``split`` as TaskSpecs in sorted path order; ``per_type`` keeps the first n of
    each task type (the rule behind the ``-small`` sets)."""
    specs, kept = [], dict.fromkeys(TASK_TYPES.values(), 0)
    for game in _split_games(data_dir(), split):
        kind = task_type_of(game)
        if per_type is not None and kept[kind] >= per_type:
            continue
        kept[kind] += 1
        specs.append(TaskSpec(game="alfworld", task=game, variation=0, seed=0, task_type=kind))
    return specs


SMALL_PER_TYPE = 2
_SETS = {"train": "train", "valid-seen": "valid_seen", "valid-unseen": "valid_unseen"}

for _name, _split in _SETS.items():
    register_task_set(f"alfworld/{_name}")(lambda s=_split: alfworld_tasks(s))
    register_task_set(f"alfworld/{_name}-small")(
        lambda s=_split: alfworld_tasks(s, per_type=SMALL_PER_TYPE)
    )

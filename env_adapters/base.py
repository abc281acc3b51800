"""The interface every text game implements, and the registries that name games and task sets.

A game object is one long-lived environment (one JVM, one TextWorld engine, ...) that plays many
episodes: ``reset`` starts an episode on a named task, ``step`` plays one text action. The agent
loop (``env_adapters.agent_loop``) owns prompts, parsing and rewards; a game only reports what
happened (``GameState``), so the same loop drives every game.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TaskSpec:
    """One task instance: which game, which task, which variation, which seed.

    A GRPO group is G rollouts of the same ``TaskSpec``.
    """

    game: str
    task: str
    variation: int = 0
    seed: int = 0
    task_type: str = ""

    def to_row(self) -> dict[str, Any]:
        return {
            "game": self.game,
            "task": self.task,
            "variation": int(self.variation),
            "seed": int(self.seed),
            "task_type": self.task_type or self.task,
        }


@dataclass
class GameState:
    """What the game reports after ``reset`` or ``step``.

    Attributes:
        observation: text the game printed.
        done: the episode is over (task finished, failed, or the game's own step limit).
        won: the task was completed. Only this counts as success.
        valid_action: False when the game did not understand or could not apply the action.
        score: the game's native score (ScienceWorld 0-100; 1/0 elsewhere); informational only.
        info: anything else; ``info["failure"]`` names why an episode was ended by a fault
            (crashed or hung engine) rather than by play.
    """

    observation: str
    done: bool = False
    won: bool = False
    valid_action: bool = True
    score: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


class TextGame(ABC):
    """A text game behind one small interface. Implementations must never let an action string
    raise: malformed input is reported as ``valid_action=False``."""

    @abstractmethod
    def reset(self, task: str, variation: int = 0, seed: int = 0) -> GameState:
        """Start an episode of ``task`` (name or file), ``variation``, seeded by ``seed``."""

    @abstractmethod
    def step(self, action: str) -> GameState:
        """Play one text action."""

    @property
    @abstractmethod
    def task_description(self) -> str:
        """The goal of the current episode, in words."""

    @property
    def task_type(self) -> str:
        """The task's family, for per-type metrics (default: unknown)."""
        return ""

    def admissible_actions(self) -> list[str] | None:
        """The actions valid now, when the game can list them; None otherwise."""
        return None

    def actions_prompt(self) -> str | None:
        """A compact description of the valid actions for the prompt (default: the list)."""
        actions = self.admissible_actions()
        return None if actions is None else "\n".join(actions)

    def close(self) -> None:  # noqa: B027 - games without resources need no close
        """Release processes and files. Safe to call twice."""


_GAMES: dict[str, Callable[..., TextGame]] = {}
_TASK_SETS: dict[str, Callable[[], list[TaskSpec]]] = {}


def register_game(name: str) -> Callable:
    """Class decorator: ``@register_game("sciworld")`` makes ``make_game("sciworld", ...)`` work."""

    def wrap(factory: Callable[..., TextGame]) -> Callable[..., TextGame]:
        _GAMES[name] = factory
        return factory

    return wrap


def register_task_set(name: str) -> Callable:
    """Function decorator naming a fixed task set, e.g. ``"sciworld/l0-test"``."""

    def wrap(builder: Callable[[], list[TaskSpec]]) -> Callable[[], list[TaskSpec]]:
        _TASK_SETS[name] = builder
        return builder

    return wrap


def _load_builtin() -> None:
    # Importing the package registers the built-in games and sets.
    import env_adapters  # noqa: F401


def make_game(name: str, **kwargs: Any) -> TextGame:
    """Build a registered game; unknown names list the known ones."""
    _load_builtin()
    if name not in _GAMES:
        raise KeyError(f"unknown game {name!r}; registered games: {sorted(_GAMES)}")
    return _GAMES[name](**kwargs)


def task_set(name: str) -> list[TaskSpec]:
    """The fixed, ordered list of tasks of a named set."""
    _load_builtin()
    if name not in _TASK_SETS:
        raise KeyError(f"unknown task set {name!r}; registered sets: {sorted(_TASK_SETS)}")
    return _TASK_SETS[name]()


def registered_games() -> list[str]:
    _load_builtin()
    return sorted(_GAMES)


def task_set_names() -> list[str]:
    _load_builtin()
    return sorted(_TASK_SETS)

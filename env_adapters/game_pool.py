"""How games are made (``GameSettings``) and the idle games reused across episodes (``GamePool``):
a JVM or game engine starts once, not per episode.

One settings type and one pool type for training (the agent loop's ``env:`` section and its
per-process pool) and evaluation.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from env_adapters.base import TextGame, make_game, registered_games


@dataclass(frozen=True)
class GameSettings:
    """The game side of the ``env:`` section: constructor kwargs and crash / hang protection."""

    games: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Constructor kwargs per game name, e.g. ``{"sciworld": {"simplification": "easy"}}``."""
    isolate: bool = False
    """Run each game in a worker subprocess (``env_adapters.isolated``): a crash or hang fails one episode."""
    step_timeout: float = 60.0
    """Seconds per step, with ``isolate``."""
    reset_timeout: float = 180.0
    """Seconds per reset, with ``isolate`` (a ScienceWorld reset may start a JVM)."""

    def __post_init__(self) -> None:
        for key in ("step_timeout", "reset_timeout"):
            if getattr(self, key) <= 0:
                raise ValueError(f"env.{key}={getattr(self, key)} must be > 0 seconds")
        known = set(registered_games())
        for name, kwargs in self.games.items():
            if name not in known or not isinstance(kwargs, dict):
                raise ValueError(f"env.games.{name} must name a registered game ({sorted(known)}) "
                                 "and map to its constructor arguments")

    def kwargs(self, name: str) -> dict[str, Any]:
        """Constructor kwargs of game ``name`` (a copy)."""
        return dict(self.games.get(name, {}))


class GamePool:
    """Idle game objects per (game, settings), reused across episodes of this worker process:
    a JVM or game engine starts once, not once per episode."""

    def __init__(self) -> None:
        self._idle: dict[str, list[TextGame]] = {}
        self._all: list[TextGame] = []
        self._lock = threading.Lock()

    def acquire(self, name: str, settings: GameSettings) -> TextGame:
        """An idle game ``name`` made with ``settings``, or a new one."""
        kwargs = settings.kwargs(name)
        key = repr((name, sorted(kwargs.items()), settings.isolate, settings.step_timeout, settings.reset_timeout))
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop()
        if settings.isolate:
            from env_adapters.isolated import IsolatedGame

            game: TextGame = IsolatedGame(name, kwargs, step_timeout=settings.step_timeout,
                                          reset_timeout=settings.reset_timeout)
        else:
            game = make_game(name, **kwargs)
        game._pool_key = key  # type: ignore[attr-defined]
        with self._lock:
            self._all.append(game)
        return game

    def release(self, game: TextGame) -> None:
        with self._lock:
            self._idle.setdefault(game._pool_key, []).append(game)  # type: ignore[attr-defined]

    def close(self) -> None:
        """Close every game this pool made (their JVMs and worker processes end)."""
        with self._lock:
            games, self._all, self._idle = self._all, [], {}
        for game in games:
            game.close()

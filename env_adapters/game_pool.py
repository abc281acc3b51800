"""Idle game objects reused across episodes: a JVM or game engine starts once, not per episode.

One pool type for training (the agent loop's per-process pool) and evaluation.
"""

from __future__ import annotations

import threading
from typing import Any

from env_adapters.base import TextGame, make_game


class GamePool:
    """Idle game objects per (game, settings), reused across episodes of this worker process:
    a JVM or game engine starts once, not once per episode."""

    def __init__(self) -> None:
        self._idle: dict[str, list[TextGame]] = {}
        self._all: list[TextGame] = []
        self._lock = threading.Lock()

    def acquire(self, name: str, kwargs: dict[str, Any], isolate: bool, timeout: float,
                reset_timeout: float = 180.0) -> TextGame:
        key = repr((name, sorted(kwargs.items()), isolate, timeout, reset_timeout))
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop()
        if isolate:
            from env_adapters.isolated import IsolatedGame

            game: TextGame = IsolatedGame(name, kwargs, step_timeout=timeout, reset_timeout=reset_timeout)
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

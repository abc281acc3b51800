"""Text games behind one interface, and the verl agent loop that plays them."""

from env_adapters.base import (
    GameState,
    TaskSpec,
    TextGame,
    make_game,
    register_game,
    register_task_set,
    task_set,
    task_set_names,
)

__all__ = [
    "GameState",
    "TaskSpec",
    "TextGame",
    "make_game",
    "register_game",
    "register_task_set",
    "task_set",
    "task_set_names",
]
import env_adapters.alfworld  # noqa: F401,E402
import env_adapters.sciworld  # noqa: F401,E402
import env_adapters.synthetic  # noqa: F401,E402

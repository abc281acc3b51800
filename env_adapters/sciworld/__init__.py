"""ScienceWorld (Wang et al. 2022) behind the project's game interface, with the paper's splits.

Importing this package registers the game ``"sciworld"`` and the ``sciworld/...`` task sets; it
does not import scienceworld or start a JVM (that happens at the first ``reset``).
"""

from env_adapters.sciworld.game import ScienceWorldGame
from env_adapters.sciworld.splits import task_names

__all__ = ["ScienceWorldGame", "task_names"]

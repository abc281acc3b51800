"""Silence verl's "<engine> engine is not available" warnings in the embedded CPU mode.

``verl/workers/engine/__init__.py`` (0.9.1) tries to import five optional training engines and warns
with a ``UserWarning`` for each one missing: torchtitan, veomni, automodel, mindspeed, megatron. The
CPU mode trains with the FSDP engine only, and every Ray process of a run imports that module, so a
2-step run's console held dozens of these lines between the step lines. Exactly those five messages
are ignored, in this process (:func:`warnings.filterwarnings`) and in every process it starts
(``PYTHONWARNINGS``, which Ray workers and vLLM's engine processes inherit before any import);
any other warning, from verl's engines or elsewhere, still shows.
"""

from __future__ import annotations

import os
import warnings

UNAVAILABLE_ENGINES = ("torchtitan", "veomni", "automodel", "mindspeed", "megatron")
PYTHONWARNINGS = "PYTHONWARNINGS"


def filters() -> list[str]:
    """One ``PYTHONWARNINGS`` entry per engine (``action:message-prefix:category``)."""
    return [f"ignore:{name} engine is not available:UserWarning" for name in UNAVAILABLE_ENGINES]


def silence_unavailable_engines() -> None:
    """Ignore the five warnings here and, through ``PYTHONWARNINGS``, in child processes (appended
    to a value already set, whose own entries keep their effect)."""
    for name in UNAVAILABLE_ENGINES:
        warnings.filterwarnings("ignore", message=f"{name} engine is not available", category=UserWarning)
    present = [entry for entry in os.environ.get(PYTHONWARNINGS, "").split(",") if entry]
    os.environ[PYTHONWARNINGS] = ",".join(present + [f for f in filters() if f not in present])

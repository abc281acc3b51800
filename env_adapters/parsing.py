"""Turning the model's text into a game action.

The documented format is one action inside tags: ``<action>open door</action>``. Two modes:

- ``strict``: only the tag counts. No tag, or an empty one, is an invalid action.
- ``lenient``: the tag if present; otherwise, when the game lists admissible actions, the
  admissible action the text names (the longest one that appears in it, earliest on ties).
  This lets an untrained model that writes free text still act, so GRPO groups mix successes
  and failures from step 0. Nothing else is guessed.
"""

from __future__ import annotations

import re

ACTION_TAG = re.compile(r"<action>(.*?)</action>", re.IGNORECASE | re.DOTALL)
MAX_ACTION_CHARS = 200
"""Longer actions are cut: no game command is this long, and a 10k-char string must not reach
the game engine."""
PARSER_MODES = ("strict", "lenient")


def normalise(text: str) -> str:
    """Lower-case, single spaces, no surrounding punctuation."""
    return " ".join(text.lower().split()).strip(" .!?\"'`")


def parse_action(text: str, admissible: list[str] | None = None, mode: str = "strict") -> str | None:
    """The action the model chose, or None when there is none (an invalid action).

    Args:
        text: the decoded response of one turn.
        admissible: the game's admissible actions now, if it lists them.
        mode: 'strict' or 'lenient' (see the module docstring).
    """
    if mode not in PARSER_MODES:
        raise ValueError(f"parser mode {mode!r} is not one of {PARSER_MODES}")
    if not isinstance(text, str):
        return None
    tagged = ACTION_TAG.findall(text)
    if tagged:
        action = normalise(tagged[0])[:MAX_ACTION_CHARS]
        return action or None
    if mode == "lenient" and admissible:
        lowered = normalise(text)
        best: tuple[int, int, str] | None = None
        for candidate in admissible:
            name = normalise(candidate)
            pos = lowered.find(name) if name else -1
            if pos >= 0 and (best is None or (-len(name), pos) < (best[0], best[1])):
                best = (-len(name), pos, candidate)
        if best is not None:
            return best[2]
    return None

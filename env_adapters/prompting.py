"""The prompt the policy sees each turn. Training, evaluation and expert (SFT) data share it."""

from __future__ import annotations

from dataclasses import dataclass

SYSTEM_PROMPT = (
    "You are an agent in a text game. Read the task and the observation, then choose the next "
    "action. Reply with exactly one action inside tags, for example: <action>look around</action>"
)


@dataclass(frozen=True)
class Turn:
    """One past turn as the prompt shows it."""

    action: str
    observation: str


def build_messages(
    task: str,
    observation: str,
    history: list[Turn],
    actions_text: str | None,
    turn: int,
    max_turns: int,
) -> list[dict[str, str]]:
    """Chat messages for one turn, ready for the tokenizer's chat template: the system prompt, then
    the user message (task, recent turns, current observation, valid actions).

    Args:
        task: the episode's goal.
        observation: what the game printed after the last action (or at reset).
        history: the recent turns to show, oldest first (the caller picks the window).
        actions_text: the game's compact list of valid actions, or None.
        turn: 0-based index of the turn being played.
        max_turns: the episode's turn limit.
    """
    parts = [f"Task: {task.strip()}"]
    if history:
        first = turn - len(history) + 1
        lines = [
            f"Turn {first + i}: action: {t.action}\nObservation: {t.observation.strip()}"
            for i, t in enumerate(history)
        ]
        parts.append("Recent turns:\n" + "\n".join(lines))
    parts.append(f"Turn {turn + 1} of {max_turns}. Current observation:\n{observation.strip()}")
    if actions_text:
        parts.append(f"Admissible actions:\n{actions_text.strip()}")
    parts.append("Your action (inside <action></action>):")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n\n".join(parts)}]


def format_action(action: str) -> str:
    """The response text an expert would write for ``action`` (used for SFT data)."""
    return f"<action>{action}</action>"

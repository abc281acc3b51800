"""An evaluation's settings (``env_adapters.evaluate``): generation, episode and game."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from env_adapters.episode import EpisodeSettings
from env_adapters.game_pool import GameSettings

PAPER_TEMPERATURE = 0.4


@dataclass(frozen=True)
class EvalSettings:
    """An evaluation's settings: generation, plus the training loop's own episode and game settings.

    ``episode`` and ``game`` are the objects the ``env:`` section of a training recipe becomes
    (``env_adapters.agent_loop.env_settings``), so their defaults are the training defaults.
    """

    model: str
    temperature: float = PAPER_TEMPERATURE
    top_p: float = 1.0
    max_response_tokens: int = 512
    """Per turn, as ``data.max_response_length`` in training."""
    max_prompt_tokens: int | None = None
    """Per turn; longer prompts are left-truncated as verl's agent loop does. None: no limit."""
    episode: EpisodeSettings = field(default_factory=EpisodeSettings)
    game: GameSettings = field(default_factory=GameSettings)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"--temperature {self.temperature} must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top-p {self.top_p} must be in (0, 1]")
        if self.max_response_tokens < 1:
            raise ValueError(f"--max-response-tokens {self.max_response_tokens} must be >= 1")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ValueError(f"--max-prompt-tokens {self.max_prompt_tokens} must be >= 1")

    def outcome_settings(self) -> dict[str, Any]:
        """What decides an episode's outcome (a resumed evaluation must keep it): everything but the
        game's crash protection (``isolate`` and its timeouts)."""
        return {**asdict(self), "game": {"games": self.game.games}}

"""What verl's ``verl.plugins`` entry point imports in every process.

Order matters: CPU mode (off unless ``VERL_EPO_CPU=1``) must register its platform before
anything imports verl's trainer or engines; then the ``epo`` trainer registers itself.
"""

import logging
import os
import sys

import verl_epo.embedded  # noqa: F401  (embedded CPU mode, when requested)
import verl_epo.trainer  # noqa: F401  (registers trainer.v1.trainer_mode=epo)


def configure_logging() -> None:
    """Give the ``verl_epo`` loggers what verl gives its own (``verl.utils.logging_utils``): stderr,
    verl's format, level ``VERL_LOGGING_LEVEL`` (INFO), in every process. Without it a Ray actor (the
    trainer runs in one) has no handler and drops every INFO line."""
    logger = logging.getLogger("verl_epo")
    if logger.handlers:
        return
    handler = logging.StreamHandler(stream=sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:%(asctime)s:%(name)s:%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))
    logger.propagate = False  # one line per message, also where Hydra configured the root logger


configure_logging()

"""What verl's ``verl.plugins`` entry point imports in every process: registers the ``epo``
trainer (and, when CPU mode is on, the embedded CPU platform and rollout)."""

import verl_epo.trainer  # noqa: F401  (registers trainer.v1.trainer_mode=epo)

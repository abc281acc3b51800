"""What verl's ``verl.plugins`` entry point imports in every process.

Order matters: CPU mode (off unless ``VERL_EPO_CPU=1``) must register its platform before
anything imports verl's trainer or engines; then the ``epo`` trainer registers itself.
"""

import verl_epo.embedded  # noqa: F401  (embedded CPU mode, when requested)
import verl_epo.trainer  # noqa: F401  (registers trainer.v1.trainer_mode=epo)

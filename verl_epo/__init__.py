"""verl-epo: EPO (Entropy-regularized Policy Optimization, arXiv 2509.22576) as a verl plug-in.

verl imports this package in every process through the ``verl.plugins`` entry point. Importing
it registers the ``epo`` trainer (``trainer.v1.trainer_mode=epo``). The math lives in
``verl_epo.algorithm`` and has no verl dependency.
"""

from verl_epo.config import EPOConfig, EPOConfigError
from verl_epo.trainer import EPOTrainer

__all__ = ["EPOConfig", "EPOConfigError", "EPOTrainer"]

"""EPO's math (arXiv 2509.22576) as pure torch functions: no verl imports, no I/O.

- ``aggregation``: Eq. 2's trajectory-level mean and the per-token weights that make it
  independent of how a batch is split.
- ``regularizers``: Eq. 3's smoothing hinge, Eq. 5's phase weight, band metrics.
- ``history``: the entropy history behind Eq. 3's reference.
- ``band``: what Eq. 6 does to one token's entropy, and the ``hold`` band mode.
"""

from verl_epo.algorithm.aggregation import (
    TurnStructure,
    trajectory_mean,
    trajectory_token_weights,
    turn_ids_from_mask,
    turn_index_in_trajectory,
    turn_index_means,
)
from verl_epo.algorithm.band import BAND_MODES, entropy_term_values, held_entropy, net_entropy_coefficients
from verl_epo.algorithm.history import HISTORY_MODES, EntropyHistory, PerTurnEntropyHistory, reference_per_token
from verl_epo.algorithm.regularizers import band_fractions, phase_weight, smoothing_penalty

__all__ = [
    "BAND_MODES",
    "HISTORY_MODES",
    "EntropyHistory",
    "PerTurnEntropyHistory",
    "TurnStructure",
    "band_fractions",
    "entropy_term_values",
    "held_entropy",
    "net_entropy_coefficients",
    "phase_weight",
    "reference_per_token",
    "smoothing_penalty",
    "trajectory_mean",
    "trajectory_token_weights",
    "turn_ids_from_mask",
    "turn_index_in_trajectory",
    "turn_index_means",
]

"""What EPO's objective does to one token's entropy, and a band mode that bounds entropy.

Per token, with w its Eq. 2 weight and c = κ_r·H̄_ref the band's top, the derivative of Eq. 6's
entropy part ``-λ·(L_H − β_k·L_smooth)`` (Eq. 2, Eq. 3, Eq. 5) with respect to the token's
entropy H is, for ``band_mode="paper"``::

    below the band  -λ·w·(1 + α·β_k)
    inside          -λ·w
    above the band  -λ·w·(1 − α·β_k)

Descending the loss raises H wherever the coefficient is negative: everywhere while α·β_k < 1,
which holds at the paper's settings (α = 0.05 or 0.1, β_k in [1, 2]). The hinge only makes the
bonus 5-20 % weaker above the band; it never pulls entropy down (``docs/epo_band.md``).

``band_mode="hold"`` (not in the paper) replaces the bonus's per-token value H by the tent
``min(H, 2c − H)``: identical to H up to the band's top, mirrored beyond it. The bonus then pushes
entropy up inside the band exactly as the paper does and pulls it down above the band with the
same strength, and the hinge adds its α·β_k on top::

    below the band  -λ·w·(1 + α·β_k)
    inside          -λ·w
    above the band  +λ·w·(1 + α·β_k)

Why a mirror and not merely switching the bonus off above the band (net +λ·w·α·β_k there):
the tokens of a language model share parameters, and with no advantage signal the parameters
settle where the pushes and pulls they receive balance. With the bonus switched off, a token
above the band pulls α·β_k = 0.05-0.2 as hard as a token inside pushes, so the balance is reached
with about 1/(1 + α·β_k) = 83-95 % of the weight above the band: the band still does not hold
(measured on a softmax policy with shared weights: ``tests/algorithm/test_algorithm_band.py``).
With the mirror the pull equals the push, and the balance point is the band's top.
"""

from __future__ import annotations

import torch

from verl_epo.algorithm.bounds import check_choice, check_coefficient
from verl_epo.algorithm.regularizers import Reference, _reference_tensor

__all__ = ["BAND_MODES", "held_entropy", "entropy_term_values", "net_entropy_coefficients"]

BAND_MODES = ("paper", "hold")
"""``paper``: Eq. 6 exactly. ``hold``: the bonus is mirrored above κ_r·H̄_ref (module docstring)."""


def held_entropy(entropy: torch.Tensor, reference: Reference, kappa_high: float) -> torch.Tensor:
    """The ``hold`` mode's per-token entropy value: H inside and below the band, mirrored above.

        v_{n,t,i} = min(H_{n,t,i}, 2·κ_r·H̄_ref − H_{n,t,i})

    Continuous at the band's top c = κ_r·H̄_ref, with gradient +1 up to c (included) and −1 above, so
    maximising its Eq. 2 mean (the entropy bonus λ·L_H of Eq. 6) drives each token's entropy
    toward c from both sides with equal strength.

    Args:
        entropy: ``[R, L]`` current-policy token entropy H, with gradient.
        reference: H̄_ref (Eq. 3): a float, a tensor broadcastable to ``[R, L]`` (detached), or
            None (no reference yet, step 0): then the values are H itself.
        kappa_high: κ_r >= 0.

    Returns:
        ``[R, L]`` in ``entropy``'s dtype promoted to at least float32.
    """
    check_coefficient("kappa_high", kappa_high)
    dtype = torch.promote_types(entropy.dtype, torch.float32)
    if reference is None:
        return entropy.to(dtype)
    top = kappa_high * _reference_tensor(reference, entropy)
    h = entropy.to(top.dtype)
    # boundary counts as inside the band, as for the hinge (gradient +1 at H = c)
    return torch.where(h <= top, h, 2.0 * top - h)


def entropy_term_values(
    entropy: torch.Tensor, reference: Reference, kappa_high: float, band_mode: str
) -> torch.Tensor:
    """Per-token values whose Eq. 2 mean is L_H in Eq. 6 under ``band_mode``.

    Args:
        entropy: ``[R, L]`` token entropy with gradient; reference, kappa_high: as in
            ``held_entropy``; band_mode: one of ``BAND_MODES``.

    Returns:
        ``[R, L]``: H (``paper``, Eq. 2) or ``held_entropy`` (``hold``).
    """
    check_choice("band_mode", band_mode, BAND_MODES)
    if band_mode == "paper":
        return entropy.to(torch.promote_types(entropy.dtype, torch.float32))
    return held_entropy(entropy, reference, kappa_high)


def net_entropy_coefficients(
    entropy_coef: float, alpha: float, beta: float, band_mode: str
) -> dict[str, float]:
    """d(−λ·(L_H − β_k·L_smooth)) / dH of one token, per unit of its Eq. 2 weight w.

    The loss's derivative with respect to a token's entropy is w times these numbers (Eq. 2, 3,
    5, 6); a negative coefficient means gradient descent raises the token's entropy.

    Args:
        entropy_coef: λ. alpha: α. beta: β_k (Eq. 5). band_mode: one of ``BAND_MODES``.

    Returns:
        ``{"below": ..., "inside": ..., "above": ...}`` for a token below κ_l·H̄_ref, inside the
        band, above κ_r·H̄_ref (with the entropy term and smoothing both on).
    """
    check_choice("band_mode", band_mode, BAND_MODES)
    lam, hinge = float(entropy_coef), float(alpha) * float(beta)
    above = -lam * (1.0 - hinge) if band_mode == "paper" else lam * (1.0 + hinge)
    return {"below": -lam * (1.0 + hinge), "inside": -lam, "above": above}

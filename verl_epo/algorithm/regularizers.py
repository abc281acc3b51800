"""EPO's entropy smoothing hinge (Eq. 3) and adaptive phase weight (Eq. 5).

Unlike the authors' released code, whose penalty is built from a comparison and so carries no
gradient, ``smoothing_penalty`` is a sum of two ReLU hinges: descending it lowers the entropy of
tokens above the band, raises it below the band and leaves in-band tokens exactly untouched.
"""

from __future__ import annotations

import math

import torch

from verl_epo.algorithm.bounds import check_band, check_coefficient

__all__ = ["smoothing_penalty", "phase_weight", "band_fractions"]

Reference = float | torch.Tensor | None


def _reference_tensor(reference: Reference, like: torch.Tensor) -> torch.Tensor:
    """The reference as a constant tensor broadcastable to ``like`` (never differentiated)."""
    # at least float32: a bf16 reference would move the band edges by up to 0.4 %
    dtype = torch.promote_types(like.dtype, torch.float32)
    if isinstance(reference, torch.Tensor):
        try:
            torch.broadcast_shapes(reference.shape, like.shape)
        except RuntimeError as err:
            raise ValueError(
                f"reference of shape {tuple(reference.shape)} does not broadcast to the entropy "
                f"shape {tuple(like.shape)}; pass a float or a per-token tensor [R, L]"
            ) from err
        return reference.detach().to(device=like.device, dtype=dtype)
    value = float(reference)
    if not math.isfinite(value):
        raise ValueError(f"reference entropy must be finite, got {value}")
    return torch.tensor(value, dtype=dtype, device=like.device)


def smoothing_penalty(
    entropy: torch.Tensor, reference: Reference, kappa_low: float, kappa_high: float
) -> torch.Tensor:
    """Eq. 3's per-token hinge, zero inside the band [κ_l·H_ref, κ_r·H_ref].

        P_{n,t,i} = max(0, κ_l·H_ref − H_{n,t,i}) + max(0, H_{n,t,i} − κ_r·H_ref)

    L_smooth = α · trajectory_mean(P, ...) (Eq. 4); aggregation and α are the caller's.

    Args:
        entropy: ``[R, L]`` current-policy token entropy H, carrying gradient.
        reference: H_ref (Eq. 3, from ``EntropyHistory.reference``): a float, a tensor
            broadcastable to ``[R, L]`` (per-token reference, for one reference per turn index),
            or None, meaning no reference yet (step k = 0): the penalty is then all zeros.
            The reference is treated as a constant (detached).
        kappa_low: κ_l >= 0, lower band factor.
        kappa_high: κ_r > κ_l, upper band factor (``bounds.check_band``).

    Returns:
        ``[R, L]`` non-negative penalty in ``entropy``'s dtype promoted to at least float32.
        Its gradient w.r.t. H is -1 below the band, +1 above it and exactly 0 inside it
        (boundaries included).
        Non-response positions are not masked here; the aggregation's zero weights drop them.
    """
    check_band(kappa_low, kappa_high)
    if reference is None:
        return torch.zeros_like(entropy, dtype=torch.promote_types(entropy.dtype, torch.float32))
    ref = _reference_tensor(reference, entropy)
    # explicit cast: a 0-dim float32 reference would not promote a bf16 entropy tensor
    h = entropy.to(ref.dtype)
    below = torch.relu(kappa_low * ref - h)
    above = torch.relu(h - kappa_high * ref)
    return below + above


def phase_weight(step: int, total_steps: int, gamma: float) -> float:
    """Eq. 5's adaptive phase weight on the smoothing term.

        β_k = 1 + exp(−γ · k / k_mid),   k_mid = max(1, floor(K / 2))

    With γ = 3 and K = 125: β_0 = 2.0, β_62 ≈ 1.0498, β_124 ≈ 1.0025.

    Args:
        step: k >= 0, the current training step (0-based). Steps past K are allowed (β → 1).
        total_steps: K >= 1, the planned number of training steps.
        gamma: γ >= 0, decay rate (paper: 3.0).

    Returns:
        β_k as a python float in (1, 2].
    """
    if int(total_steps) != total_steps or total_steps < 1:
        raise ValueError(f"total_steps (K) must be an integer >= 1, got {total_steps}")
    if int(step) != step or step < 0:
        raise ValueError(f"step (k) must be an integer >= 0, got {step}")
    check_coefficient("gamma", gamma)
    k_mid = max(1, int(total_steps) // 2)
    return 1.0 + math.exp(-gamma * int(step) / k_mid)


def band_fractions(
    entropy: torch.Tensor,
    reference: Reference,
    kappa_low: float,
    kappa_high: float,
    response_mask: torch.Tensor,
) -> tuple[float, float]:
    """Fractions of response tokens whose entropy lies above / below Eq. 3's band.

    Plain token fractions over the tokens given (a metric, not an Eq. 2 aggregate).

    Args:
        entropy: ``[R, L]``; reference: as in ``smoothing_penalty``; response_mask: ``[R, L]``.

    Returns:
        ``(above, below)``: fraction with H > κ_r·H_ref and fraction with H < κ_l·H_ref;
        ``(0.0, 0.0)`` when ``reference`` is None or there is no response token.
    """
    check_band(kappa_low, kappa_high)
    if entropy.shape != response_mask.shape:
        raise ValueError(
            f"entropy shape {tuple(entropy.shape)} differs from response_mask shape "
            f"{tuple(response_mask.shape)}"
        )
    if reference is None:
        return 0.0, 0.0
    response = response_mask.to(entropy.device) != 0
    count = int(response.sum())
    if count == 0:
        return 0.0, 0.0
    ref = _reference_tensor(reference, entropy)
    values = entropy.detach().to(ref.dtype)
    above = int((response & (values > kappa_high * ref)).sum())
    below = int((response & (values < kappa_low * ref)).sum())
    return above / count, below / count

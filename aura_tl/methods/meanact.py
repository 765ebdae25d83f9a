"""Mean-AcT (Rodriguez et al. 2024): the transport of `aura_tl.methods._transport` with omega fixed to 1, a
per-dimension shift of the toxic mean onto the non-toxic mean, beta = mean target - mean source. Its defaults are
the paper's (ungated, lambda 1): Linear-AcT's gated lambda 2 was never measured for it."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from aura_tl.methods import register_method
from aura_tl.methods._transport import TransportMethod, TransportOptions


def fit_mean_transport(source: Float[Tensor, "n d"], target: Float[Tensor, "m d"]) -> dict[str, Tensor]:
    """omega = 1, beta = mean target - mean source, and the source support lo, hi (float64 means)."""
    beta = target.double().mean(0) - source.double().mean(0)
    return {"omega": torch.ones_like(beta, dtype=torch.float32), "beta": beta.float(),
            "lo": source.min(0).values.float(), "hi": source.max(0).values.float()}


@register_method
class MeanAcT(TransportMethod):
    name = "meanact"
    summary = "Mean-AcT: shift toxic activations by (non-toxic mean - toxic mean) per dimension (causal estimation)"
    Options = TransportOptions

    def fit(self, source: Tensor, target: Tensor) -> dict[str, Tensor]:
        return fit_mean_transport(source, target)

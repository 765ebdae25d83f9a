"""Mean-AcT (Rodriguez et al. 2024): Linear-AcT with omega fixed to 1, a per-dimension shift of the toxic mean
onto the non-toxic mean, beta = mean target - mean source, on the same support rule and causal estimation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from aura_tl.methods import register_method
from aura_tl.methods.base import GATE_HELP, STRENGTH_HELP
from aura_tl.methods.linact import ActOptions, LinearAcT
from aura_tl.options import option


def fit_mean_transport(source: Float[Tensor, "n d"], target: Float[Tensor, "m d"]) -> dict[str, Tensor]:
    """omega = 1, beta = mean target - mean source, and the source support lo, hi (float64 means)."""
    beta = target.double().mean(0) - source.double().mean(0)
    return {"omega": torch.ones_like(beta, dtype=torch.float32), "beta": beta.float(),
            "lo": source.min(0).values.float(), "hi": source.max(0).values.float()}


@dataclass
class MeanActOptions(ActOptions):
    # ungated at lambda 1 as the paper: the gated, lambda 2 default of Linear-AcT was not measured for Mean-AcT
    gate: bool = option(False, GATE_HELP)
    strength: float = option(1.0, STRENGTH_HELP)


@register_method
class MeanAcT(LinearAcT):
    name = "meanact"
    summary = "Mean-AcT: shift toxic activations by (non-toxic mean - toxic mean) per dimension (causal estimation)"
    Options = MeanActOptions

    def fit(self, source: Tensor, target: Tensor) -> dict[str, Tensor]:
        return fit_mean_transport(source, target)

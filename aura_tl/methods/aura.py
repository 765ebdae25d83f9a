"""AurA (Suau et al., ICML 2024): every neuron with AUROC > 0.5 is scaled by alpha = 1 - Gini = 1 - 2 (AUROC - 0.5)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from aura_tl.methods import register_method
from aura_tl.methods._scaling import ScalingMethod
from aura_tl.methods.base import ConceptOptions


def aura_alphas(auroc: Float[Tensor, " d"]) -> Float[Tensor, " d"]:
    """alpha = 1 - 2 (AUROC - 0.5) for experts (AUROC > 0.5), 1 elsewhere."""
    return torch.where(auroc > 0.5, 1 - 2 * (auroc - 0.5), torch.ones_like(auroc)).float()


@register_method
class AurA(ScalingMethod):
    name = "aura"
    summary = "AurA: scale each neuron with AUROC > 0.5 by 1 - 2 (AUROC - 0.5); no hyperparameter"
    Options = ConceptOptions

    def alphas(self, aurocs, options):
        return {k: aura_alphas(v) for k, v in aurocs.items()}

"""Damp (Suau et al. 2024's baseline): scale the k highest-AUROC neurons by one fixed alpha."""

from __future__ import annotations

from dataclasses import dataclass

from aura_tl.methods import register_method
from aura_tl.methods._scaling import ScalingMethod, topk_alphas
from aura_tl.methods.det0 import TopKOptions
from aura_tl.options import option


@dataclass
class DampOptions(TopKOptions):
    damp_alpha: float = option(0.5, "the factor Damp multiplies its k neurons by, in [0, 1]")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.damp_alpha <= 1.0:
            raise ValueError(f"damp_alpha must be in [0, 1], got {self.damp_alpha}")


@register_method
class Damp(ScalingMethod):
    name = "damp"
    summary = "Damp: scale the k highest-AUROC neurons by damp_alpha"
    Options = DampOptions

    def alphas(self, aurocs, options):
        return topk_alphas(aurocs, options.num_experts, options.damp_alpha)

"""Det0 (Suau et al. 2024's baseline): zero the k highest-AUROC neurons across all hooked layers."""

from __future__ import annotations

from dataclasses import dataclass

from aura_tl.methods import register_method
from aura_tl.methods._scaling import ScalingMethod, topk_alphas
from aura_tl.methods.base import ConceptOptions
from aura_tl.options import option


@dataclass
class TopKOptions(ConceptOptions):
    num_experts: int = option(500, "k: how many of the highest-AUROC neurons (across all hooked layers) to change")


@register_method
class Det0(ScalingMethod):
    name = "det0"
    summary = "Det0: set the k highest-AUROC neurons to 0"
    Options = TopKOptions

    def alphas(self, aurocs, options):
        return topk_alphas(aurocs, options.num_experts, 0.0)

"""Linear-AcT (Rodriguez et al. 2024): per dimension, the affine map that transports the toxic activations onto
the non-toxic ones (`aura_tl.methods._transport`), estimated as the 1-D optimal-transport map restricted to affine:
sort the pooled source values and the pooled target values separately and fit least squares on the sorted pairs,
    omega = sum (x - mean x)(y - mean y) / sum (x - mean x)^2,   beta = mean y - omega mean x.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from aura_tl.methods import register_method
from aura_tl.methods._transport import TransportMethod, TransportOptions
from aura_tl.options import with_default

DEFAULT_BUDGET = 2.0  # % word perplexity, worst of the full retention panel (aura_tl.calibrate); none turns it off


@dataclass
class LinearActOptions(TransportOptions):
    # the package's default intervention (why, measured: docs/results/defaults.md): the later third of the blocks'
    # attention outputs, under a gate tuned through the model on its own toxic and clean continuations
    # (aura_tl.gate_tuning), continuing a prompt from its last position on (the prompt's keys and values unsteered)
    hooks: str = with_default(TransportOptions, "hooks", "blocks.{2/3:}.hook_attn_out")
    gate: str | None = with_default(TransportOptions, "gate", "tuned")
    steer_prompt: bool = with_default(TransportOptions, "steer_prompt", False)
    # ...then calibrated to the model at hand: the strongest lambda up to the transport cap within +2 % on every
    # text of the full retention panel
    strength: float = with_default(TransportOptions, "strength", TransportMethod.max_strength)
    max_ppl_increase: float | None = with_default(TransportOptions, "max_ppl_increase", DEFAULT_BUDGET)
    calibration_panel: str = with_default(TransportOptions, "calibration_panel", "full")


def read_sorted(sorted_values: Float[Tensor, "m d"], positions: Float[Tensor, " k"]) -> Float[Tensor, "k d"]:
    """Sorted columns read at fractional row positions in [0, m - 1], linearly interpolated between rows."""
    below = positions.floor().long()
    above = (below + 1).clamp(max=len(sorted_values) - 1)
    weight = (positions - below)[:, None]
    return sorted_values[below] * (1 - weight) + sorted_values[above] * weight


def sorted_pairs(source: Float[Tensor, "n d"], target: Float[Tensor, "m d"]
                 ) -> tuple[Float[Tensor, "k d"], Float[Tensor, "k d"]]:
    """Each column sorted; with unequal counts the longer side is read at the shorter side's quantiles."""
    xs, ys = source.sort(dim=0).values, target.sort(dim=0).values
    if len(xs) != len(ys):
        short, long_ = (xs, ys) if len(xs) < len(ys) else (ys, xs)
        resampled = read_sorted(long_, torch.linspace(0, len(long_) - 1, len(short), dtype=long_.dtype))
        xs, ys = (short, resampled) if short is xs else (resampled, short)
    return xs, ys


def fit_linear_transport(source: Float[Tensor, "n d"], target: Float[Tensor, "m d"]) -> dict[str, Tensor]:
    """omega, beta (least squares on sorted pairs) and the source support lo, hi, per dimension (float64 fit).
    A dimension whose source is constant gets omega = 1 (a shift of the means)."""
    xs, ys = sorted_pairs(source.double(), target.double())
    x_mean, y_mean = xs.mean(0), ys.mean(0)
    spread = ((xs - x_mean) ** 2).sum(0)
    omega = torch.where(spread > 0, ((xs - x_mean) * (ys - y_mean)).sum(0) / spread.clamp(min=1e-300),
                        torch.ones_like(spread))
    beta = y_mean - omega * x_mean
    return {"omega": omega.float(), "beta": beta.float(), "lo": source.min(0).values.float(),
            "hi": source.max(0).values.float()}


@register_method
class LinearAcT(TransportMethod):
    name = "linact"
    summary = "Linear-AcT: per-dimension affine transport of toxic onto non-toxic activations (causal estimation)"
    Options = LinearActOptions

    def fit(self, source: Tensor, target: Tensor) -> dict[str, Tensor]:
        return fit_linear_transport(source, target)

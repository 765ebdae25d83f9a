"""What AurA, Det0 and Damp share: an AUROC per neuron from pooled responses, one factor `alpha` per neuron, and
a hook that multiplies every position by alpha' = 1 - lambda (1 - alpha)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from aura_tl.auroc import auroc as compute_auroc
from aura_tl.hooks import layer_of
from aura_tl.intervention import Intervention
from aura_tl.methods.base import Method, base_metadata, data_metadata
from aura_tl.models import ModelShape
from aura_tl.responses import cached_responses


def scale_hook(activation: Tensor, hook, alpha: Tensor) -> Tensor:
    """Multiply every position's neurons by alpha (reshaped to per-head when the hook is [batch, pos, head, d])."""
    if activation.ndim == 4:
        alpha = alpha.view(activation.shape[-2], activation.shape[-1])
    return activation * alpha


def effective_alpha(alpha: Tensor, strength: float) -> Tensor:
    """alpha' = 1 - lambda (1 - alpha): lambda 0 leaves every neuron alone, 1 applies alpha as learned."""
    return 1 - strength * (1 - alpha)


def effective_alphas(intervention) -> dict[str, Tensor]:
    return {hook: effective_alpha(a, intervention.strength) for hook, a in intervention.tensor("alpha").items()}


def topk_alphas(aurocs: dict[str, Tensor], k: int, value: float) -> dict[str, Tensor]:
    """Det0 (value 0) / Damp (value alpha): `value` on the k highest-AUROC neurons across all hooks, 1 elsewhere."""
    names = list(aurocs)
    flat = torch.cat([aurocs[n].flatten() for n in names])
    if not 0 < k <= flat.numel():
        raise ValueError(f"num_experts must be in 1..{flat.numel()} (the hooked neurons), got {k}")
    alphas = torch.ones_like(flat, dtype=torch.float32)
    alphas[flat.topk(k).indices] = value
    sizes = [aurocs[n].numel() for n in names]
    return dict(zip(names, alphas.split(sizes)))


class ScalingMethod(Method):
    """Learn: pooled responses -> AUROC per neuron -> `alphas`. Stored per hook: `alpha` (applied), `auroc`."""

    applies = ("alpha",)

    def alphas(self, aurocs: dict[str, Float[Tensor, " d"]], options) -> dict[str, Tensor]:
        raise NotImplementedError

    def learn(self, model, data, options, *, progress: bool = True):
        started = time.perf_counter()
        responses = cached_responses(model, data, options.hooks, pooling=options.pooling,
                                     batch_size=options.learn_batch_size, path=options.responses, progress=progress)
        return self.from_responses(model, responses, options, data=data_metadata(data),
                                   seconds={"responses": round(time.perf_counter() - started, 3)})

    def from_responses(self, model, responses, options, **metadata):
        started = time.perf_counter()
        aurocs = {name: compute_auroc(pooled, responses.labels) for name, pooled in responses.pooled.items()}
        alphas = self.alphas(aurocs, options)
        metadata.setdefault("data", {"source": "responses", "n": len(responses.labels)})
        metadata["seconds"] = {**metadata.get("seconds", {}), "auroc": round(time.perf_counter() - started, 3)}
        metadata = base_metadata(
            options, hooks=list(alphas), pooling=responses.metadata.get("pooling", options.pooling),
            auroc={k: {"experts": int((v > 0.5).sum()), "max": round(float(v.max()), 6),
                       "mean": round(float(v.mean()), 6)} for k, v in aurocs.items()},
            **metadata,
        )
        tensors = {hook: {"alpha": alphas[hook], "auroc": aurocs[hook]} for hook in alphas}
        return Intervention(self.name, tensors, ModelShape.of(model), metadata, options.strength)

    def hook_fn(self, tensors: dict[str, Tensor], strength: float, metadata: dict) -> Callable | None:
        alpha = effective_alpha(tensors["alpha"], strength)
        return None if torch.all(alpha == 1) else partial(scale_hook, alpha=alpha)

    def summary_row(self, hook, tensors, strength, metadata) -> dict:
        alpha = effective_alpha(tensors["alpha"].float(), strength)
        row = {"hook": hook, "neurons": int(alpha.numel()), "experts": int((alpha < 1).sum()),
               "min_alpha": float(alpha.min()), "mean_alpha": float(alpha.mean())}
        if "auroc" in tensors:
            row["max_auroc"] = float(tensors["auroc"].max())
        return row

    def plot(self, intervention, plt):
        """Per-layer AUROC histograms (log count) beside the distribution of the alphas below 1."""
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
        aurocs = intervention.tensor("auroc")
        names = list(aurocs)
        if names:
            bins = np.linspace(0, 1, 51)
            grid = np.stack([np.histogram(aurocs[n].double().numpy(), bins=bins)[0] for n in names])
            image = left.imshow(np.log1p(grid), aspect="auto", origin="lower", cmap="viridis",
                                extent=[0, 1, -0.5, len(names) - 0.5])
            left.axvline(0.5, color="white", lw=0.8, ls="--")
            left.set_xlabel("AUROC (toxic vs non-toxic)")
            left.set_ylabel("layer")
            left.set_yticks(range(len(names)), [str(layer_of(n)) for n in names], fontsize=6)
            left.set_title("AUROC histogram per hooked layer (log count)")
            fig.colorbar(image, ax=left)
        alphas = torch.cat([a.flatten() for a in effective_alphas(intervention).values()]).numpy()
        changed = alphas[alphas < 1]
        right.hist(changed, bins=50, color="tab:red")
        right.set_xlabel("alpha (neurons with alpha < 1)")
        right.set_ylabel("neurons")
        right.set_title(f"{intervention.method}: {changed.size} of {alphas.size} neurons dampened")
        return fig

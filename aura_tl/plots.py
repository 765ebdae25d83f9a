"""Figures for `aura-tl inspect --plot`: per-layer AUROC histograms and the alpha distribution (scaling methods),
or the probe accuracy per layer and head (DeStein)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aura_tl.hooks import layer_of


def plot_intervention(intervention, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if intervention.method == "destein":
        fig = _destein_figure(intervention, plt)
    else:
        fig = _scaling_figure(intervention, plt)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def _scaling_figure(intervention, plt):
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(intervention.tensors)
    bins = np.linspace(0, 1, 51)
    if intervention.auroc:
        grid = np.stack([np.histogram(intervention.auroc[n].double().numpy(), bins=bins)[0] for n in names])
        image = left.imshow(np.log1p(grid), aspect="auto", origin="lower", cmap="viridis",
                            extent=[0, 1, -0.5, len(names) - 0.5])
        left.axvline(0.5, color="white", lw=0.8, ls="--")
        left.set_xlabel("AUROC (toxic vs non-toxic)")
        left.set_ylabel("layer")
        left.set_yticks(range(len(names)), [str(layer_of(n)) for n in names], fontsize=6)
        left.set_title("AUROC histogram per hooked layer (log count)")
        fig.colorbar(image, ax=left)
    alphas = torch.cat([a.flatten() for a in intervention.effective_alphas().values()]).numpy()
    changed = alphas[alphas < 1]
    right.hist(changed, bins=50, color="tab:red")
    right.set_xlabel("alpha (neurons with alpha < 1)")
    right.set_ylabel("neurons")
    right.set_title(f"{intervention.method}: {changed.size} of {alphas.size} neurons dampened")
    return fig


def _destein_figure(intervention, plt):
    accuracy = intervention.metadata.get("probe_accuracy", {})
    names = sorted(accuracy, key=layer_of)  # metadata JSON is stored with sorted (lexicographic) keys
    grid = np.array([accuracy[n] for n in names]) if names else np.zeros((1, 1))
    fig, ax = plt.subplots(figsize=(7, 5))
    image = ax.imshow(grid, aspect="auto", origin="lower", cmap="magma", vmin=0.5, vmax=1.0)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_yticks(range(len(names)), [str(layer_of(n)) for n in names], fontsize=6)
    ax.set_title("DeStein probe accuracy (toxic vs non-toxic) per layer and head")
    fig.colorbar(image, ax=ax)
    return fig

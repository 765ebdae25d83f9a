"""`aura-tl inspect --plot`: the figure the intervention's method draws, written as a PNG."""

from __future__ import annotations

from pathlib import Path


def plot_intervention(intervention, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = intervention.spec.plot(intervention, plt)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)

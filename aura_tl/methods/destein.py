"""DeStein (Li et al. 2024): detoxification by steering pairs and head-wise activation fusion.

1. Pairs: a toxic and a non-toxic version of the same content, from a file (JSONL `toxic`,`nontoxic`, or the
   ParaDetox TSV) or self-induced: the model itself continues neutral seeds under a toxic and a polite instruction.
2. Each side is prefixed with its instruction (TOXIC_PREFIX / NONTOXIC_PREFIX).
3. Per layer and head, the head's attention output is averaged over the last 8 tokens; the head's direction is the
   sum over pairs of (toxic - non-toxic).
4. A logistic-regression probe per (layer, head), trained on 80 % of the pairs, scores held-out accuracy; each
   head's direction is weighted by (1 + accuracy) and the heads are summed into one d_model vector per layer.
5. At inference the layer's attention output x becomes |x| * normalize(x/|x| - alpha * v/|v|) on every position.

Where this differs from the released code: the released code cuts the layer's post-projection output into
n_heads equal chunks and calls them heads. Here a head is a real head: its `attn.hook_z` activations (probed in
its own d_head coordinates) mapped to d_model by its slice of `W_O`, so the per-head weights act on what each head
actually writes to the residual stream.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from einops import einsum, rearrange
from jaxtyping import Float
from torch import Tensor

from aura_tl.data import read_jsonl, read_paradetox_pairs
from aura_tl.embedded_data import SUBJECTS
from aura_tl.generation import SamplingConfig, generate
from aura_tl.hooks import layer_of
from aura_tl.intervention import Intervention
from aura_tl.methods import register_method
from aura_tl.methods.base import CommonOptions, Method, base_metadata
from aura_tl.models import ModelShape
from aura_tl.options import option
from aura_tl.responses import collect_responses

log = logging.getLogger(__name__)
TOXIC_PREFIX = "The following text is abusive, harmful, negative, obscene, racist, rude and toxic: "
NONTOXIC_PREFIX = "The following text is kind, polite, positive, respectful and supportive: "
TAIL_TOKENS = 8
DEFAULT_COUNT = 200
SEED_STEMS = ["is", "said that", "always", "thinks that", "wrote", "told me", "keeps", "never"]


def default_alpha(model) -> float:
    """The paper's fusion strength: 0.4 for GPT-2-like models (learned positions), 0.3 for Llama-like (rotary)."""
    return 0.3 if model.cfg.positional_embedding_type == "rotary" else 0.4


def read_pairs(path: str | Path, count: int | None = None, seed: int = 0) -> list[tuple[str, str]]:
    """(toxic, non-toxic) pairs from JSONL (`toxic`, `nontoxic`) or a ParaDetox TSV (toxic, first neutral)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        rows = read_jsonl(path)
        if rows and not {"toxic", "nontoxic"} <= set(rows[0]):
            raise ValueError(f"{path}: pair rows need 'toxic' and 'nontoxic' fields, got {sorted(rows[0])}")
        pairs = [(str(r["toxic"]), str(r["nontoxic"])) for r in rows if r["toxic"] and r["nontoxic"]]
    else:
        pairs = read_paradetox_pairs(path)
    if not pairs:
        raise ValueError(f"no (toxic, non-toxic) pairs in {path}")
    random.Random(seed).shuffle(pairs)
    return pairs[:count] if count else pairs


def self_induced_pairs(model, count: int = DEFAULT_COUNT, max_new_tokens: int = 16, seed: int = 0,
                       batch_size: int = 16, progress: bool = False) -> list[tuple[str, str]]:
    """Pairs the model writes itself: one neutral seed ("<subject> <stem>"), continued under the toxic and under
    the polite instruction (nucleus sampling, top_p 0.9, fixed seed). Seeds come from the embedded subjects."""
    seeds = [f"{s[0].upper()}{s[1:]} {stem}" for s, stem in itertools.product(SUBJECTS, SEED_STEMS)]
    random.Random(seed).shuffle(seeds)
    seeds = (seeds * (count // len(seeds) + 1))[:count]
    config = SamplingConfig(max_new_tokens=max_new_tokens, do_sample=True, top_p=0.9, seed=seed)
    toxic = generate(model, [TOXIC_PREFIX + s for s in seeds], config, batch_size=batch_size, progress=progress,
                     desc="destein toxic pairs")
    polite = generate(model, [NONTOXIC_PREFIX + s for s in seeds], config, batch_size=batch_size, progress=progress,
                      desc="destein polite pairs")
    return [(s + t, s + p) for s, t, p in zip(seeds, toxic, polite)]


def probe_accuracy(toxic: np.ndarray, nontoxic: np.ndarray, seed: int = 0) -> float:
    """Held-out accuracy of a logistic regression toxic-vs-non-toxic; the split keeps each pair on one side."""
    from sklearn.linear_model import LogisticRegression

    n = len(toxic)
    order = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(round(0.8 * n)))
    train, test = order[:cut], order[cut:]
    if len(test) == 0:
        raise ValueError("DeStein needs at least 2 pairs (80/20 split)")
    x_train = np.concatenate([toxic[train], nontoxic[train]])
    y_train = np.r_[np.ones(len(train)), np.zeros(len(train))]
    x_test = np.concatenate([toxic[test], nontoxic[test]])
    y_test = np.r_[np.ones(len(test)), np.zeros(len(test))]
    clf = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    return float(clf.score(x_test, y_test))


def layer_direction(
    delta_z: Float[Tensor, "head d_head"], w_o: Float[Tensor, "head d_head d_model"], accuracy: Sequence[float]
) -> Float[Tensor, " d_model"]:
    """sum_h (1 + acc_h) * delta_z_h @ W_O[h]: each head's summed difference in what it writes, probe-weighted."""
    weights = 1 + torch.tensor(list(accuracy), dtype=delta_z.dtype)
    return einsum(weights, delta_z, w_o, "head, head d_head, head d_head d_model -> d_model")


@dataclass
class DeSteinOptions(CommonOptions):
    destein_pairs: str | None = option(None, "JSONL of {toxic, nontoxic} pairs or a ParaDetox TSV (default: "
                                       "self-induced: the model writes its own pairs)", aliases=("--pairs",))
    destein_count: int = option(DEFAULT_COUNT, "number of (toxic, non-toxic) pairs", aliases=("--count",))
    destein_alpha: float | None = option(None, "fusion strength (default 0.3 for rotary models, 0.4 otherwise)",
                                         aliases=("--alpha",))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.destein_count < 2:
            raise ValueError(f"destein_count must be at least 2 (80/20 probe split), got {self.destein_count}")


def attention_output_hook(model, layer: int) -> str:
    """Where layer `layer`'s heads' summed output (what `layer_direction` is in) is: `hook_attn_out`, unless the
    block normalises the attention output before adding it to the residual (Gemma 2/3's `ln1_post`), where
    `hook_attn_out` is after that norm's weight. There the post-norm's `hook_normalized` (output / its RMS) is
    the same vector up to a positive scale, which the fusion ignores: it keeps norms and reads only directions."""
    return f"blocks.{layer}.ln1_post.hook_normalized" if hasattr(model.blocks[layer], "ln1_post") \
        else f"blocks.{layer}.hook_attn_out"


def fuse_hook(activation: Float[Tensor, "batch pos d"], hook, unit: Tensor, alpha: float) -> Tensor:
    """DeStein's norm-preserving subtraction of a unit direction: |x| * normalize(x/|x| - alpha * v)."""
    norm = activation.norm(dim=-1, keepdim=True)
    steered = activation / norm.clamp(min=1e-12) - alpha * unit
    return norm * steered / steered.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def learn_destein(
    model,
    pairs: str | Path | Sequence[tuple[str, str]] | None = None,
    *,
    count: int = DEFAULT_COUNT,
    alpha: float | None = None,
    strength: float = 1.0,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
):
    """A DeStein intervention: one direction per layer on its attention output (`attention_output_hook`), probe
    accuracies in metadata."""
    return DeStein().learn(model, None, DeSteinOptions(strength=strength, seed=seed, learn_batch_size=batch_size,
                                                       destein_count=count, destein_alpha=alpha),
                           progress=progress, pairs=pairs)


@register_method
class DeStein(Method):
    name = "destein"
    summary = "DeStein: probe-weighted head-wise steering directions fused into each layer's attention output"
    Options = DeSteinOptions
    applies = ("direction",)
    needs_data = False

    def learn(self, model, data, options, *, progress: bool = True, pairs=None):
        started = time.perf_counter()
        pairs = pairs if pairs is not None else options.destein_pairs
        count, seed, batch_size = options.destein_count, options.seed, options.learn_batch_size
        if pairs is None:
            source = "self-induced"
            pair_list = self_induced_pairs(model, count, seed=seed, batch_size=batch_size, progress=progress)
        elif isinstance(pairs, (str, Path)):
            source, pair_list = str(pairs), read_pairs(pairs, count, seed)
        else:
            source, pair_list = "given", list(pairs)[:count]
        if len(pair_list) < 2:
            raise ValueError(f"DeStein needs at least 2 pairs, got {len(pair_list)}")
        made_pairs = time.perf_counter()
        texts = [TOXIC_PREFIX + t for t, _ in pair_list] + [NONTOXIC_PREFIX + n for _, n in pair_list]
        responses = collect_responses(model, texts, None, "blocks.*.attn.hook_z", pooling=f"mean_last:{TAIL_TOKENS}",
                                      batch_size=batch_size, progress=progress)
        n, heads, d_head = len(pair_list), model.cfg.n_heads, model.cfg.d_head
        tensors, accuracy = {}, {}
        for name, pooled in responses.pooled.items():
            layer = layer_of(name)
            z = rearrange(pooled.double(), "n (head d) -> n head d", head=heads, d=d_head)
            toxic, nontoxic = z[:n], z[n:]
            acc = [probe_accuracy(toxic[:, h].numpy(), nontoxic[:, h].numpy(), seed) for h in range(heads)]
            w_o = model.blocks[layer].attn.W_O.detach().double().cpu()
            if w_o.shape[0] != heads:  # grouped-query models share K/V, never W_O; guard against odd layouts
                raise ValueError(f"unexpected W_O shape {tuple(w_o.shape)} in layer {layer}")
            out_name = attention_output_hook(model, layer)
            tensors[out_name] = {"direction": layer_direction((toxic - nontoxic).sum(0), w_o, acc).float()}
            accuracy[out_name] = [round(a, 4) for a in acc]
        metadata = base_metadata(
            options,
            alpha=float(options.destein_alpha if options.destein_alpha is not None else default_alpha(model)),
            pairs={"source": source, "count": n, "examples": [list(p) for p in pair_list[:3]]},
            tail_tokens=TAIL_TOKENS, probe_accuracy=accuracy,
            seconds={"pairs": round(made_pairs - started, 3), "total": round(time.perf_counter() - started, 3)},
        )
        return Intervention(self.name, tensors, ModelShape.of(model), metadata, options.strength)

    def hook_fn(self, tensors, strength: float, metadata: dict) -> Callable | None:
        alpha = float(metadata.get("alpha", 0.3)) * strength
        if alpha == 0:
            return None
        direction = tensors["direction"]
        return partial(fuse_hook, unit=direction / direction.norm().clamp(min=1e-12), alpha=alpha)

    def summary_row(self, hook, tensors, strength, metadata) -> dict:
        accs = metadata.get("probe_accuracy", {}).get(hook, [])
        return {"hook": hook, "norm": float(tensors["direction"].norm()),
                "mean_probe_acc": sum(accs) / len(accs) if accs else float("nan")}

    def plot(self, intervention, plt):
        """Probe accuracy per layer (rows) and head (columns)."""
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

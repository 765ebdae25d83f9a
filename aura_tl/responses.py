"""Pooled neuron responses: one forward pass per batch, pooled inside the hooks, so memory is O(N x D) whatever the
sentence length (never a `run_with_cache` of every layer).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from einops import rearrange
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from aura_tl.distributed import merge_shards, shard
from aura_tl.backends import backend_of, hooks_applied
from aura_tl.hooks import DEFAULT_HOOKS, concrete_patterns, last_block, layer_of, resolve_hook_names, user_hook_name
from aura_tl.io import atomic_save_safetensors, hash_texts, load_safetensors
from aura_tl.models import hf_tokenizer, pad_token_id

log = logging.getLogger(__name__)
PLAIN_POOLINGS = ("max", "mean", "last")
POOLINGS = (*PLAIN_POOLINGS, "mean_last:K", "positions:K")
SENTENCE_POOLINGS = (*PLAIN_POOLINGS, "mean_last:K")
PARAMETRISED = re.compile(r"(mean_last|positions):[1-9]\d*")


def rows_per_text(pooling: str) -> int:
    """How many rows pooling makes of one text: K for `positions:K` (K single positions), else 1."""
    return int(pooling.split(":", 1)[1]) if pooling.startswith("positions:") else 1


def check_pooling(pooling: str) -> str:
    """`pooling` if it is one of POOLINGS (K a positive count), else a ValueError listing them."""
    if pooling not in PLAIN_POOLINGS and not PARAMETRISED.fullmatch(pooling):
        raise ValueError(f"unknown pooling '{pooling}'; choose from {POOLINGS}")
    return pooling


def check_sentence_pooling(pooling: str) -> str:
    """`pooling` if it makes one row per text (max, mean, last, `mean_last:K`): what a method's concept sentences
    may be pooled by (`positions:K`, K rows of a text, is for gates that read one position at a time)."""
    one_row = isinstance(pooling, str) and (pooling in PLAIN_POOLINGS or (
        PARAMETRISED.fullmatch(pooling) is not None and pooling.startswith("mean_last:")))
    if not one_row:
        raise ValueError(f"unknown sentence pooling {pooling!r}; choose from {SENTENCE_POOLINGS}")
    return pooling


def spread(length: int, k: int, device=None) -> Int[Tensor, " k"]:
    """K positions evenly spread over [0, length), first and last included (repeated when length < K)."""
    return torch.linspace(0, length - 1, k, device=device).round().long()


@dataclass
class Batch:
    """Right-padded tokens, the mask of the positions that pooling may see, and the same as row spans when every
    row's content is one contiguous run (`spans`: consecutive rows sharing a (first, last+1) position range)."""

    tokens: Int[Tensor, "batch pos"]
    pool_mask: Bool[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    spans: list[tuple[int, int, int, int]] | None = None  # (row_start, row_stop, pos_start, pos_stop)


def tokenize(model, texts: Sequence[str], max_length: int | None = None) -> tuple[list[list[int]], list[list[bool]], int]:
    """Token ids (with the tokenizer's own special tokens, as the HF model sees them) and which ids are content.

    Special tokens (BOS and the like) never count for pooling. Texts longer than `max_length` (default n_ctx) are
    truncated; the number truncated is returned so callers can say so.
    """
    tokenizer = hf_tokenizer(model)
    max_length = max_length or model.cfg.n_ctx
    encoded = tokenizer(list(texts), add_special_tokens=True, return_special_tokens_mask=True)
    ids, content, truncated = [], [], 0
    for input_ids, special in zip(encoded["input_ids"], encoded["special_tokens_mask"]):
        if len(input_ids) > max_length:
            truncated += 1
            input_ids, special = input_ids[:max_length], special[:max_length]
        ids.append(input_ids)
        content.append([not s for s in special])
    return ids, content, truncated


def make_batch(ids: list[list[int]], content: list[list[bool]], pad_id: int, device) -> Batch:
    """Right padding: with causal attention real tokens never see the padding; the explicit attention mask only
    keeps TransformerLens from guessing one from pad ids (which may equal EOS)."""
    width = max(len(x) for x in ids)
    tokens = torch.full((len(ids), width), pad_id, dtype=torch.long)
    pool_mask = torch.zeros((len(ids), width), dtype=torch.bool)
    attention = torch.zeros((len(ids), width), dtype=torch.long)
    for row, (x, c) in enumerate(zip(ids, content)):
        tokens[row, : len(x)] = torch.tensor(x, dtype=torch.long)
        pool_mask[row, : len(c)] = torch.tensor(c, dtype=torch.bool)
        attention[row, : len(x)] = 1
    return Batch(tokens.to(device), pool_mask.to(device), attention.to(device), content_spans(content))


def content_spans(content: list[list[bool]]) -> list[tuple[int, int, int, int]] | None:
    """Group consecutive rows whose content positions are the same contiguous range; None if any row's aren't."""
    spans: list[tuple[int, int, int, int]] = []
    for row, flags in enumerate(content):
        positions = [i for i, keep in enumerate(flags) if keep]
        first, stop = positions[0], positions[-1] + 1
        if stop - first != len(positions):
            return None
        if spans and spans[-1][1] == row and spans[-1][2:] == (first, stop):
            spans[-1] = (spans[-1][0], row + 1, first, stop)
        else:
            spans.append((row, row + 1, first, stop))
    return spans


def pool_spans(activation: Float[Tensor, "batch pos d"], spans: list[tuple[int, int, int, int]], how: str
               ) -> Float[Tensor, "batch d"]:
    """`pool` for rows with contiguous content: reduces views of the activation, never a masked copy of it."""
    parts = []
    for row_start, row_stop, first, stop in spans:
        if how.startswith("positions:"):
            view = activation[row_start:row_stop, first + spread(stop - first, rows_per_text(how), activation.device)]
            parts.append(view.flatten(0, 1))
            continue
        if how.startswith("mean_last:"):
            first = max(first, stop - int(how.split(":", 1)[1]))
            how_here = "mean"
        else:
            how_here = how
        view = activation[row_start:row_stop, first:stop]
        if how_here == "max":
            parts.append(view.amax(dim=1))
        elif how_here == "mean":
            parts.append(view.mean(dim=1))
        elif how_here == "last":
            parts.append(view[:, -1])
        else:
            raise ValueError(f"unknown pooling '{how}'; choose from {POOLINGS}")
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def pool(
    activation: Float[Tensor, "batch pos d"], mask: Bool[Tensor, "batch pos"], how: str
) -> Float[Tensor, "batch d"]:
    """Max, mean or last of each row's masked positions, (`mean_last:K`) the mean of the last K of them, or
    (`positions:K`) K of them evenly spread from the first to the last, each its own row ([batch * K, d], row-major:
    what a gate that reads one position at a time is fitted on)."""
    if how.startswith("positions:"):
        k = rows_per_text(how)
        picked = []
        for row, keep in zip(activation, mask):
            positions = keep.nonzero()[:, 0]
            picked.append(row[positions[spread(len(positions), k, mask.device)]])
        return torch.cat(picked)
    if how.startswith("mean_last:"):
        k = int(how.split(":", 1)[1])
        from_end = mask.flip(1).long().cumsum(1).flip(1)  # 1 at the last real position, 2 before it, ...
        return pool(activation, mask & (from_end <= k), "mean")
    if how == "max":
        return activation.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)
    if how == "mean":
        weights = mask[..., None].to(activation.dtype)
        return (activation * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
    if how == "last":
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = torch.where(mask, positions, torch.full_like(positions, -1)).amax(dim=1)
        return activation[torch.arange(activation.shape[0], device=activation.device), last]
    raise ValueError(f"unknown pooling '{how}'; choose from {POOLINGS}")


def flatten_heads(activation: Tensor) -> Float[Tensor, "batch pos d"]:
    """Per-head hooks ([batch, pos, head, d_head]) become one neuron axis (head-major)."""
    return rearrange(activation, "b p h d -> b p (h d)") if activation.ndim == 4 else activation


def length_batches(sorted_lengths: list[int], batch_size: int, max_tokens: int) -> list[tuple[int, int]]:
    """[start, stop) ranges over length-sorted rows: at most `batch_size` rows and `max_tokens` padded tokens each."""
    ranges, start = [], 0
    for stop in range(1, len(sorted_lengths) + 1):
        rows, width = stop - start, sorted_lengths[stop - 1]
        if rows > 1 and (rows > batch_size or rows * width > max_tokens):
            ranges.append((start, stop - 1))
            start = stop - 1
    if start < len(sorted_lengths):
        ranges.append((start, len(sorted_lengths)))
    return ranges


@dataclass
class Responses:
    """Pooled responses per hook ([N, D] each; [N * K, D] for `positions:K`, text i in rows i K .. i K + K - 1)
    with the labels (one per text) and how they were made."""

    pooled: dict[str, Float[Tensor, "n d"]]
    labels: Int[Tensor, " n"]
    metadata: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        tensors = {f"pooled/{k}": v.contiguous() for k, v in self.pooled.items()}
        tensors["labels"] = self.labels
        atomic_save_safetensors(tensors, path, {"responses": json.dumps(self.metadata, sort_keys=True)})

    @classmethod
    def load(cls, path: str | Path) -> "Responses":
        tensors, meta = load_safetensors(path)
        if "responses" not in meta or "labels" not in tensors:
            raise ValueError(f"{path} is not an aura-tl responses file")
        pooled = {k.removeprefix("pooled/"): v for k, v in tensors.items() if k.startswith("pooled/")}
        return cls(pooled, tensors["labels"], json.loads(meta["responses"]))


class _Pooler:
    """Length-sorted batches of tokenised texts, and hooks that pool each hooked activation into [N, D] tensors
    (input order) for whichever batch is current: what plain and causal collection share. Under torch.distributed
    each rank runs every world-size-th length batch (`merge_shards` then completes the tensors)."""

    def __init__(self, model, texts: Sequence[str], pooling: str, batch_size: int, max_batch_tokens: int | None,
                 max_length: int | None, out_device) -> None:
        check_pooling(pooling)
        if len(texts) == 0:
            raise ValueError("no texts to collect responses for")
        ids, content, self.truncated = tokenize(model, texts, max_length)
        if self.truncated:
            log.warning("%d of %d texts were longer than %d tokens and were truncated", self.truncated, len(texts),
                        max_length or model.cfg.n_ctx)
        empty = [i for i, c in enumerate(content) if not any(c)]
        if empty:
            raise ValueError(f"{len(empty)} texts have no content tokens (e.g. index {empty[0]}: {texts[empty[0]]!r})")
        self.ids, self.content, self.n, self.pooling, self.out_device = ids, content, len(texts), pooling, out_device
        self.k = rows_per_text(pooling)  # rows per text: text i fills rows i k .. i k + k - 1
        self.pad_id = pad_token_id(hf_tokenizer(model))
        self.device = model.cfg.device
        self.order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        self.ranges = length_batches([len(ids[i]) for i in self.order], batch_size, max_batch_tokens or batch_size * 128)
        self.pooled: dict[str, Tensor] = {}
        self.current: tuple[Batch, Tensor] | None = None

    def batches(self):
        """(batch, rows) for each length batch; the pooling hooks pool into these rows while it is current."""
        rank, world = shard()
        for start, stop in self.ranges[rank::world]:
            rows = self.order[start:stop]
            batch = make_batch([self.ids[i] for i in rows], [self.content[i] for i in rows], self.pad_id, self.device)
            self.current = (batch, torch.tensor(rows, device=self.out_device))
            yield self.current

    def hooks(self, names: Sequence[str]) -> list[tuple[str, object]]:
        def make_hook(name: str):
            def hook(activation: Tensor, hook) -> None:
                batch, rows = self.current
                flat = flatten_heads(activation)
                result = (pool_spans(flat, batch.spans, self.pooling) if batch.spans is not None
                          else pool(flat, batch.pool_mask, self.pooling))
                k = self.k
                if name not in self.pooled:
                    self.pooled[name] = torch.zeros((self.n * k, result.shape[-1]), dtype=torch.float32,
                                                    device=self.out_device)
                at = rows if k == 1 else (rows[:, None] * k + torch.arange(k, device=rows.device)).flatten()
                self.pooled[name][at] = result.to(self.out_device, torch.float32)
            return hook
        return [(name, make_hook(name)) for name in names]

    def merge(self, names: Sequence[str]) -> None:
        """Complete the pooled tensors of `names` over ranks (a rank with no batch learns their widths first)."""
        rank, world = shard()
        if world == 1:
            return
        widths: list[dict | None] = [None] * world
        torch.distributed.all_gather_object(widths, {n: self.pooled[n].shape[1] for n in names if n in self.pooled})
        for name in names:
            if name not in self.pooled:
                width = next(w[name] for w in widths if name in w)
                self.pooled[name] = torch.zeros((self.n * self.k, width), dtype=torch.float32, device=self.out_device)
        merge_shards([self.pooled[n] for n in names])

    def responses(self, model, names, labels) -> Responses:
        for name, tensor in self.pooled.items():
            if torch.isnan(tensor).any() or torch.isinf(tensor).any():
                raise ValueError(f"NaN or inf in the pooled activations of {name} (layer {layer_of(name)}): the "
                                 "model's numbers overflowed (try dtype=float32)")
        return Responses(
            {name: self.pooled[name] for name in names},
            torch.tensor(list(labels) if labels is not None else [-1] * self.n, dtype=torch.long),
            {"model": str(model.cfg.model_name), "hooks": list(names), "pooling": self.pooling, "n": self.n,
             "truncated": self.truncated},
        )


def collect_responses(
    model,
    texts: Sequence[str],
    labels: Sequence[int] | None = None,
    hooks: str | Sequence[str] = DEFAULT_HOOKS,
    *,
    pooling: str = "max",
    batch_size: int = 32,
    max_batch_tokens: int | None = None,
    max_length: int | None = None,
    progress: bool = True,
    out_device: str | torch.device = "cpu",
    save_to: str | Path | None = None,
) -> Responses:
    """Run `model` over `texts` and pool every hooked neuron per sentence (padding and special tokens excluded).

    Sentences are batched by length to waste little compute on padding (at most `batch_size` rows and
    `max_batch_tokens` padded tokens, default 128 per row, so rare long texts go in small batches), the forward pass
    stops after the last hooked layer, and results land in preallocated [N, D] tensors on `out_device` in the input order.
    """
    pooler = _Pooler(model, texts, pooling, batch_size, max_batch_tokens, max_length, out_device)
    names = resolve_hook_names(model, hooks)
    last_layer, backend = last_block(names), backend_of(model)
    with torch.inference_mode(), hooks_applied(model, pooler.hooks(names)):
        rank, world = shard()
        for batch, _ in tqdm(pooler.batches(), total=len(pooler.ranges[rank::world]), desc="responses",
                             disable=not progress or rank > 0):
            backend.run_through(model, batch.tokens, batch.attention_mask, last_layer)
    pooler.merge(names)
    responses = pooler.responses(model, names, labels)
    if save_to:
        responses.save(save_to)
    return responses



def responses_from_cache(
    cache,
    labels: Sequence[int] | None = None,
    hooks: str | Sequence[str] = DEFAULT_HOOKS,
    *,
    pooling: str = "max",
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    tokens: Int[Tensor, "batch pos"] | None = None,
    special_ids: Sequence[int] | None = None,
) -> Responses:
    """`Responses` from activations you already hold: an `ActivationCache` of `model.run_with_cache(...)` or a dict
    of [batch, pos, d] (or [batch, pos, head, d]) tensors, pooled like `collect_responses` pools.

    Positions where `attention_mask` is 0 (padding) are left out, and so are `tokens` that are special (`special_ids`,
    default: the special tokens of `cache.model`'s tokenizer, e.g. BOS), as `collect_responses` does; with
    neither, every position counts. `hooks` are patterns over the cache's names ('*' is the layer).
    """
    model = getattr(cache, "model", None)
    spelling = (lambda n: user_hook_name(model, n)) if model is not None else (lambda n: n)
    keys: dict[str, str] = {}  # one spelling -> the cache key read (a bridge's cache holds alias and canonical keys)
    # a plain dict has no model: its depth is taken as its deepest block + 1 (for layer ranges such as {1/2:})
    n_layers = model.cfg.n_layers if model is not None else 1 + max(layer_of(key) for key in cache.keys())
    patterns = concrete_patterns(hooks, n_layers)
    for key in cache.keys():
        if any(fnmatch.fnmatchcase(key, p) for p in patterns):
            keys.setdefault(spelling(key), key)
    if not keys:
        raise ValueError(f"no activation in the cache matches {hooks!r}; it holds {sorted(cache.keys())[:4]} ...")
    names = sorted(keys, key=lambda n: (layer_of(n), n))
    first = cache[keys[names[0]]]
    mask = torch.ones(first.shape[:2], dtype=torch.bool, device=first.device)
    if attention_mask is not None:
        mask &= attention_mask.to(first.device).bool()
    if tokens is not None:
        if special_ids is None:
            special_ids = hf_tokenizer(model).all_special_ids if model is not None else []
        if special_ids:
            mask &= ~torch.isin(tokens.to(first.device), torch.tensor(list(special_ids), device=first.device))
    if not mask.any(dim=1).all():
        raise ValueError("some rows have no position left to pool (all padding or special tokens)")
    pooled = {n: pool(flatten_heads(cache[keys[n]]), mask, pooling).float().cpu() for n in names}
    n_rows = first.shape[0]
    return Responses(
        pooled, torch.tensor(list(labels) if labels is not None else [-1] * n_rows, dtype=torch.long),
        {"hooks": names, "pooling": pooling, "n": n_rows, "source": "cache"},
    )

class _AllPooled(Exception):
    """Raised by the last of a layer's hooks to fire: the block need not run further."""


def _stop_once_all_fired(names: Sequence[str]) -> list[tuple[str, Callable]]:
    """Hooks (added after the pooling ones, so they run after them at each point) that end the block's forward once
    every hook in `names` has fired."""
    waiting = set(names)

    def make(name):
        def hook(activation, hook):
            waiting.discard(name)
            if not waiting:
                raise _AllPooled
        return hook

    return [(name, make(name)) for name in names]


def collect_responses_causal(
    model,
    texts: Sequence[str],
    labels: Sequence[int] | None,
    hooks: str | Sequence[str],
    estimate: Callable[[str, Float[Tensor, "n d"]], Callable | None],
    *,
    pooling: str = "mean",
    batch_size: int = 32,
    max_batch_tokens: int | None = None,
    max_length: int | None = None,
    progress: bool = True,
) -> tuple[Responses, list[tuple[str, Callable]]]:
    """Causal estimation: each hooked layer's responses are pooled with the hooks already fitted for the layers
    before it applied. `estimate(name, pooled)` fits one hook and returns the hook function to apply from then on
    (or None). Returns the responses and the fitted `(name, fn)` pairs.

    The residual stream at the next hooked layer is kept per batch (`aura_tl.backends.LayerRunner`), so each block
    runs once to carry it forward and once more (hooked blocks only, and only until its last hook has fired) to
    pool: under twice a non-causal pass, instead of one pass per layer.
    Hooks of one layer are pooled together, with only earlier layers' hooks applied.
    """
    pooler = _Pooler(model, texts, pooling, batch_size, max_batch_tokens, max_length, "cpu")
    names = resolve_hook_names(model, hooks)
    layers = sorted({layer_of(n) for n in names})
    if layers[0] < 0:
        raise ValueError("causal estimation needs hooks inside blocks (blocks.{L}....)")
    backend = backend_of(model)
    batches = [(batch, rows, backend.layer_runner(model, batch.tokens, batch.attention_mask, layers[-1]))
               for batch, rows in pooler.batches()]
    fitted: list[tuple[str, Callable]] = []
    bar = tqdm(total=len(layers) * len(batches), desc="causal responses", disable=not progress or shard()[0] > 0)
    with torch.inference_mode():
        for layer in layers:
            here = [n for n in names if layer_of(n) == layer]
            for batch, rows, runner in batches:
                pooler.current = (batch, rows)
                with hooks_applied(model, fitted):
                    runner.carry_to(layer)
                    with hooks_applied(model, [*pooler.hooks(here), *_stop_once_all_fired(here)]):
                        try:
                            runner.run(layer)
                        except _AllPooled:  # the rest of the block (an MLP after `hook_attn_out`) reads nothing
                            pass
                bar.update(1)
            pooler.merge(here)  # every rank fits the same maps from all rows
            for name in here:
                fn = estimate(name, pooler.pooled[name])
                if fn is not None:
                    fitted.append((name, fn))
    bar.close()
    return pooler.responses(model, names, labels), fitted

def cached_responses(model, data, hooks: str | Sequence[str], *, pooling: str, batch_size: int,
                     path: str | Path | None = None, progress: bool = True) -> Responses:
    """`collect_responses` for concept data, saved at `path` and reused on the next call with the same model,
    hook names, pooling and sentences (anything else is recomputed, with a warning)."""
    key = {"model": str(model.cfg.model_name), "hooks": resolve_hook_names(model, hooks), "pooling": pooling,
           "n": len(data), "texts_hash": hash_texts(data.texts)}
    if path and Path(path).is_file():
        cached = Responses.load(path)
        if all(cached.metadata.get(k) == v for k, v in key.items()):
            log.warning("reusing the responses saved at %s", path)
            return cached
        changed = [k for k, v in key.items() if cached.metadata.get(k) != v]
        log.warning("responses at %s were made with other %s; recomputing", path, ", ".join(changed))
    responses = collect_responses(model, data.texts, data.labels, hooks, pooling=pooling, batch_size=batch_size,
                                  progress=progress)
    responses.metadata.update(key)
    if path and shard()[0] == 0:
        responses.save(path)
    return responses

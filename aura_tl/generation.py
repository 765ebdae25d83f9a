"""Batched generation on either TransformerLens model class: left padding with an explicit attention mask, the
backend's KV cache (`aura_tl.backends.Decoder`), greedy or nucleus sampling, EOS and stop strings. Hooks active on
the model (an intervention) apply to every position, prompt and generated tokens alike.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from aura_tl.backends import backend_of
from aura_tl.models import hf_tokenizer, pad_token_id, start_token_id
from aura_tl.prompt_scope import prompt_before, prompt_marked

log = logging.getLogger(__name__)


@dataclass
class SamplingConfig:
    """How the next token is chosen; `do_sample=False` is greedy (argmax)."""

    max_new_tokens: int = 20
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not (math.isfinite(self.temperature) and math.isfinite(self.top_p)):
            raise ValueError(f"temperature and top_p must be finite numbers, got {self.temperature}, {self.top_p}")
        if self.do_sample and self.temperature <= 0:
            raise ValueError("temperature must be > 0 when sampling")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def prompt_budget(n_ctx: int, max_new_tokens: int) -> int:
    """How many prompt tokens fit beside `max_new_tokens` new ones in a context of `n_ctx`: an error when not even
    one does (the first new token needs a position to be predicted from)."""
    if max_new_tokens > n_ctx - 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} does not fit the model's context of {n_ctx} tokens: at most "
                         f"{n_ctx - 1} new tokens (one position is the prompt's)")
    return n_ctx - max_new_tokens


def keep_end(ids: Sequence[int], budget: int) -> list[int]:
    """The last `budget` tokens of a prompt (the end is what the continuation follows)."""
    return list(ids[len(ids) - budget:]) if len(ids) > budget else list(ids)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[Int[Tensor, "b p"], Int[Tensor, "b p"]]:
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            tokens[i, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
            mask[i, width - len(row):] = 1
    return tokens.to(device), mask.to(device)


NUCLEUS_CANDIDATES = (256, 4096)  # widths a top-p nucleus is looked for in before the whole vocabulary is sorted


def nucleus(probs: Float[Tensor, "b v"], top_p: float) -> tuple[Float[Tensor, "b k"], Int[Tensor, "b k"]]:
    """The top-p nucleus of each row: the smallest set of most probable tokens whose mass reaches `top_p`, as
    (probabilities, zero outside the nucleus; token ids). Found among the `k` most probable tokens by a partial
    sort (`topk`), widening `k` only when some row's nucleus is wider, instead of sorting the whole vocabulary
    every step (49,152 tokens for SmolLM2: the largest single cost of sampling on a CPU)."""
    for k in (*NUCLEUS_CANDIDATES, probs.shape[-1]):
        k = min(k, probs.shape[-1])
        top, ids = probs.topk(k, dim=-1)  # sorted, most probable first
        if k == probs.shape[-1] or bool((top.sum(dim=-1) >= top_p).all()):
            break
    outside = top.cumsum(dim=-1) - top > top_p  # mass before a token already reaches top_p
    return top.masked_fill(outside, 0.0), ids


def next_token(logits: Float[Tensor, "b v"], config: SamplingConfig, generator: torch.Generator | None) -> Tensor:
    """Argmax, or a draw from the temperature-scaled distribution restricted to the top-p nucleus."""
    if not config.do_sample:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / config.temperature, dim=-1)
    if config.top_p >= 1.0:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    kept, ids = nucleus(probs, config.top_p)
    return ids.gather(-1, torch.multinomial(kept, 1, generator=generator)).squeeze(-1)


@torch.inference_mode()
def generate_ids(
    model,
    prompts: Sequence[Sequence[int]],
    config: SamplingConfig,
    *,
    eos_token_ids: Sequence[int] = (),
    stop_check=None,
) -> list[list[int]]:
    """New token ids for each prompt (one batch). Stops per row at EOS or when `stop_check(row_ids)` is true; the
    batch stops when every row has."""
    device = model.cfg.device
    pad_id = pad_token_id(hf_tokenizer(model))
    tokens, mask = left_pad(prompts, pad_id, device)
    batch = tokens.shape[0]
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device=device).manual_seed(config.seed)
    decoder = backend_of(model).decoder(model)
    # left-padded: every row's prompt ends in the last column, where edits start for steer_prompt=False
    with prompt_marked(prompt_before([tokens.shape[1] - 1] * batch, tokens.shape[1], device)):
        logits = decoder.prefill(tokens, mask)
    eos = torch.tensor(list(eos_token_ids), dtype=torch.long, device=device)
    chosen_steps: list[Tensor] = []
    length = torch.full((batch,), config.max_new_tokens, dtype=torch.long)  # tokens each row keeps
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    for step in range(config.max_new_tokens):
        chosen = next_token(logits, config, generator)
        chosen_steps.append(chosen)
        finished = ~done & torch.isin(chosen, eos) if eos.numel() else torch.zeros_like(done)
        if stop_check is not None:  # stop strings need the text: decoded per row, only for rows still going
            so_far = torch.stack(chosen_steps, dim=1).tolist()
            for row in (~done & ~finished).nonzero().flatten().tolist():
                if stop_check(so_far[row]):
                    finished[row] = True
        length[finished.cpu()] = step + 1
        done |= finished
        if bool(done.all()) or step == config.max_new_tokens - 1:
            break
        logits = decoder.step(chosen[:, None])
    steps = torch.stack(chosen_steps, dim=1).tolist()
    return [row[:n] for row, n in zip(steps, length.tolist())]


def generate(
    model,
    prompts: Sequence[str],
    config: SamplingConfig | None = None,
    *,
    batch_size: int = 16,
    stop: Sequence[str] = (),
    stop_at_eos: bool = True,
    progress: bool = False,
    desc: str = "generate",
) -> list[str]:
    """Continuations (text only, without the prompt) for each prompt, cut at the first stop string."""
    config = config or SamplingConfig()
    tokenizer = hf_tokenizer(model)
    limit = prompt_budget(model.cfg.n_ctx, config.max_new_tokens)
    encoded = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    too_long = sum(len(ids) > limit for ids in encoded)
    if too_long:
        log.warning("%d prompt(s) longer than the context allows (%d tokens with %d new): their ends are kept",
                    too_long, limit, config.max_new_tokens)
    start = start_token_id(tokenizer)
    encoded = [keep_end(ids, limit) or [start] for ids in encoded]  # an empty prompt starts from BOS
    eos = [tokenizer.eos_token_id] if stop_at_eos and tokenizer.eos_token_id is not None else []

    hit_stop = stop_checker(tokenizer, stop)
    texts: list[str] = [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress):
        rows = order[start : start + batch_size]
        new = generate_ids(model, [encoded[i] for i in rows], config, eos_token_ids=eos,
                           stop_check=hit_stop if stop else None)
        for i, ids in zip(rows, new):
            texts[i] = cut_at_stop(tokenizer.decode(ids, skip_special_tokens=True), stop)
    return texts


def stop_checker(tokenizer, stop: Sequence[str], skip_special_tokens: bool = False):
    """`check(ids)`: does the decoded row contain any stop string yet (a stop may span several tokens)."""

    def check(ids: list[int]) -> bool:
        text = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        return any(s and s in text for s in stop)

    return check


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Text up to the earliest stop string."""
    cut = len(text)
    for s in stop:
        if s and s in text:
            cut = min(cut, text.index(s))
    return text[:cut]

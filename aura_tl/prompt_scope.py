"""Where a forward's prompt lies, so an intervention can leave it alone: `steer_prompt=False` edits only from each
prompt's last position on (the position that predicts the first new token, and every new token after it), so the
prompt's keys and values stay the unsteered model's and the steered text still reads the prompt as written.

The callers that know the prompt mark it for one forward (`prompt_marked`): generation's prefill (each row's whole
prompt but its last position) and lm-eval's loglikelihood (each row's context but the position that predicts the
continuation). Every other forward (perplexity of whole texts, KV-cached decoding steps, learning) marks nothing,
and every position is edited.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from jaxtyping import Bool
from torch import Tensor

_PROMPT: ContextVar[Tensor | None] = ContextVar("aura_tl_prompt", default=None)


@contextmanager
def prompt_marked(prompt: Bool[Tensor, "batch pos"] | None) -> Iterator[None]:
    """Within the block, `prompt[row, pos]` is true where a forward's position belongs to a prompt an intervention
    with `steer_prompt=False` leaves unsteered; None marks nothing (a forward of its own inside a marked block)."""
    token = _PROMPT.set(prompt)
    try:
        yield
    finally:
        _PROMPT.reset(token)


def prompt_before(starts: Sequence[int], width: int, device=None) -> Bool[Tensor, "batch pos"]:
    """The mark for rows whose edits start at `starts[row]`: positions before it are prompt."""
    return torch.arange(width, device=device)[None, :] < torch.tensor(list(starts), device=device)[:, None]


def leaving_prompt(fn: Callable) -> Callable:
    """`fn` (a hook returning the edited activation) applied only outside the marked prompt positions."""
    def hook(activation: Tensor, hook) -> Tensor:
        edited = fn(activation, hook)
        prompt = _PROMPT.get()
        if prompt is None:
            return edited
        if prompt.shape != activation.shape[:2]:
            where = getattr(hook, "name", "a hook")
            raise RuntimeError(f"the marked prompt has shape {tuple(prompt.shape)} but the activation at {where} has "
                               f"batch and positions {tuple(activation.shape[:2])}")
        keep = prompt.to(activation.device).view(*prompt.shape, *([1] * (activation.ndim - 2)))
        return torch.where(keep, activation, edited)
    return hook

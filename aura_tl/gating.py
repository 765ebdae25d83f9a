"""Conditional steering: a per-position gate in [0, 1] that lets any intervention act where the activation looks
toxic and leaves other text (WikiText, PIQA, HellaSwag) nearly untouched, so a strong edit costs less retention.

At each hook the gate is a linear probe on the activation the hook sees, g(a) = sigmoid(w . a + b): w lies along the
difference of the toxic and non-toxic mean responses, and its scale and b are a 1-D logistic regression (Platt
scaling) of the pooled responses projected on it. The steered activation is a + g(a) (f(a) - a), f the method's own
hook. Gates are fitted causally: layer l's probe reads activations with the earlier layers' gated edits applied,
as they will be when the intervention runs. (Conditional activation steering in the spirit of Lee et al. 2024,
"Programming Refusal with Conditional Activation Steering"; the probe here is this package's own choice.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import torch
from jaxtyping import Float
from torch import Tensor

GATE_TENSORS = ("gate_w", "gate_b")  # optional tensors of any hook: the gate's weight (one per unit) and bias
GATE_POOLING = "mean"  # the gate reads one token's activation; mean pooling keeps the sentence's average there


def fit_gate(pooled: Float[Tensor, "n d"], labels: Tensor, l2: float = 1e-3, steps: int = 50) -> dict[str, Tensor]:
    """w, b of a gate for pooled responses with labels (1 = toxic): the unit difference-of-means direction, scaled
    with a bias by Newton steps of a 1-D L2-regularised logistic regression on the projections (float64)."""
    x, y = pooled.double(), labels.double()
    if not ((y == 0).any() and (y == 1).any()):
        raise ValueError("a gate needs toxic and non-toxic responses")
    direction = x[y == 1].mean(0) - x[y == 0].mean(0)
    direction = direction / direction.norm().clamp(min=1e-12)
    projected = x @ direction
    center, spread = projected.mean(), projected.std().clamp(min=1e-12)
    z = (projected - center) / spread  # standardised: the Newton steps start well conditioned
    theta = torch.zeros(2, dtype=torch.float64)  # slope, intercept on z
    features = torch.stack([z, torch.ones_like(z)], 1)
    for _ in range(steps):
        p = torch.sigmoid(features @ theta)
        gradient = features.T @ (p - y) / len(y) + l2 * torch.tensor([theta[0], 0.0], dtype=torch.float64)
        hessian = (features.T * (p * (1 - p))) @ features / len(y) + l2 * torch.diag(torch.tensor([1.0, 0.0],
                                                                                                   dtype=torch.float64))
        step = torch.linalg.solve(hessian + 1e-12 * torch.eye(2, dtype=torch.float64), gradient)
        theta = theta - step
        if step.abs().max() < 1e-10:
            break
    slope, intercept = theta[0] / spread, theta[1] - theta[0] * center / spread
    return {"gate_w": (slope * direction).float(), "gate_b": intercept.reshape(1).float()}


def gate_value(activation: Tensor, w: Tensor, b: Tensor) -> Float[Tensor, "batch pos"]:
    """sigmoid(w . a + b) per position; per-head activations [batch, pos, head, d] are read head-major."""
    flat = activation.flatten(-2) if activation.ndim == 4 else activation
    return torch.sigmoid(flat @ w + b)


def gated_hook(activation: Tensor, hook, inner: Callable, w: Tensor, b: Tensor) -> Tensor:
    """a + g(a) (inner(a) - a): the method's edit, scaled per position by the gate read before it."""
    gate = gate_value(activation, w, b)
    gate = gate.view(*gate.shape, *([1] * (activation.ndim - gate.ndim)))
    return activation + gate * (inner(activation, hook) - activation)


def gate(fn: Callable | None, tensors: dict[str, Tensor]) -> Callable | None:
    """`fn` gated by the hook's gate tensors when it has them; `fn` itself otherwise."""
    if fn is None or "gate_w" not in tensors:
        return fn
    return partial(gated_hook, inner=fn, w=tensors["gate_w"], b=tensors["gate_b"])


def gate_accuracy(pooled: Float[Tensor, "n d"], labels: Tensor, fitted: dict[str, Tensor]) -> float:
    """How often the gate is above 1/2 exactly on the toxic responses (training accuracy, 4 decimals)."""
    predicted = gate_value(pooled, fitted["gate_w"], fitted["gate_b"]) > 0.5
    return round(float((predicted == labels.bool()).float().mean()), 4)


def gates_from_responses(intervention, responses):
    """`intervention` with a gate per hook fitted on pooled responses you already hold (non-causal: they were
    recorded without the earlier hooks' gated edits; at the first hook this equals `learn_gates`)."""
    from aura_tl.intervention import Intervention

    started = time.perf_counter()
    labels = torch.as_tensor(responses.labels)
    tensors, accuracy = {}, {}
    for hook, named in intervention.tensors.items():
        fitted = fit_gate(responses.pooled[hook], labels)
        tensors[hook] = {**named, **fitted}
        accuracy[hook] = gate_accuracy(responses.pooled[hook], labels, fitted)
    record = {"pooling": responses.metadata.get("pooling"), "data": {"source": "responses", "n": len(labels)},
              "accuracy": accuracy, "causal": False, "seconds": round(time.perf_counter() - started, 3)}
    return Intervention(intervention.method, tensors, intervention.shape, {**intervention.metadata, "gate": record},
                        intervention.strength)


def learn_gates(model, intervention, data, *, at_strength: float = 1.0, batch_size: int = 32, progress: bool = True):
    """`intervention` with a gate fitted at each of its hooks on `data` (concept sentences, 1 = toxic), causally:
    with the earlier hooks' gated edits applied at `at_strength` (1: the method's own edit, so the gates do not
    depend on the lambda a user turns later); per-hook training accuracy and timing go into metadata `gate`."""
    from aura_tl.intervention import Intervention
    from aura_tl.responses import collect_responses_causal

    started = time.perf_counter()
    labels = torch.tensor(data.labels)
    spec, strength = intervention.spec, intervention.spec.check_strength(at_strength)
    tensors = {hook: dict(named) for hook, named in intervention.tensors.items()}
    accuracy: dict[str, float] = {}

    def estimate(name: str, pooled: Tensor) -> Callable | None:
        tensors[name].update(fit_gate(pooled, labels))
        accuracy[name] = gate_accuracy(pooled, labels, tensors[name])
        used = {k: v.to(model.cfg.device, model.cfg.dtype) for k, v in tensors[name].items()}
        return gate(spec.hook_fn({k: used[k] for k in spec.applies}, strength, intervention.metadata), used)

    collect_responses_causal(model, data.texts, data.labels, intervention.hook_names, estimate, pooling=GATE_POOLING,
                             batch_size=batch_size, progress=progress)
    tensors = {hook: {k: v.clone() for k, v in named.items()} for hook, named in tensors.items()}  # not inference tensors
    record = {"pooling": GATE_POOLING, "data": {"source": data.source, "n": len(data)}, "accuracy": accuracy,
              "fitted_at_strength": strength, "seconds": round(time.perf_counter() - started, 3)}
    return Intervention(intervention.method, tensors, intervention.shape, {**intervention.metadata, "gate": record},
                        intervention.strength)

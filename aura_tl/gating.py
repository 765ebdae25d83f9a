"""Conditional steering: a per-position gate in [0, 1] that lets any intervention act where the activation looks
toxic and leaves other text (WikiText, PIQA, HellaSwag) nearly untouched, so a strong edit costs less retention.

The steered activation is a + g(a) (f(a) - a), f the method's own hook and g a *gate rule*'s value at that hook.
Gate rules are plugins like methods: a `GateRule` subclass declares its name, options, the tensors it stores per
hook and how it fits them from pooled responses, and registers with `@register_gate` (here, from any module, or
through the `aura_tl.gates` entry-point group). `gate=<rule>` chooses one when learning (`gate=true` is
`DEFAULT_GATE`); a saved file names its rule in metadata `gate.rule`, so it applies the same way after loading.
Learning the gates of an intervention (causally, or from responses a caller holds) lives in `aura_tl.learn`.

This module imports only the option declarations and the registry (both import nothing from the package): a rule
is fit, value and accuracy on plain tensors.

The built-in rule `probe`: a linear probe on the activation the hook sees, g(a) = sigmoid(w . a + b), with w along
the difference of the toxic and non-toxic mean responses and its scale and b a 1-D logistic regression (Platt
scaling) of the pooled responses projected on it. (Conditional activation steering in the spirit of Lee et al.
2024, "Programming Refusal with Conditional Activation Steering"; the probe is this package's own choice.)

The built-in rule `token`: the same form, learned where it is read, on single positions (`positions:16` pooling):
the later half of each toxic sentence against every position of non-toxic sentences and of neutral text (the
model's own samples, WikiText; `aura_tl.neutral_text`), by an L2 logistic regression over the whole activation.
The probe, fitted on pooled sentences of one corpus, opens on any text unlike both of its classes (on SmolLM2 as
much on a PIQA answer as on a toxic prompt: docs/results/token-gate.md).

The rule `tuned` (`aura_tl.gate_tuning`, registered through the package's own `aura_tl.gates` entry point, as it
runs the model): the token gate, then every hook's w and b tuned together through the frozen model so that the
gated edit says what the ungated one says on toxic text and what the unsteered model says on neutral text.

The built-in rule `unit`: the token gate times a factor per unit, so a position's edit can be open on the units
whose own values look toxic and closed on the others (per-unit gating in the spirit of GAPS, arXiv 2609.01878; the
form, a 1-D logistic regression per unit normalised on the toxic rows, is this package's own).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from aura_tl.options import coerce_options, option
from aura_tl.registry import Registry

DEFAULT_GATE = "probe"  # what `gate=true` means


@dataclass
class NoGateOptions:
    """A rule with nothing to set."""


class GateRule:
    """How a gate is fitted and read. Subclasses set the class attributes and implement `fit` and `value`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line, shown by `aura-tl methods`
    Options: ClassVar[type] = NoGateOptions  # the rule's own options; names must differ from every method's
    tensors: ClassVar[tuple[str, ...]] = ()  # stored per hook beside the method's (names start with `gate_`)
    unit_tensors: ClassVar[tuple[str, ...]] = ()  # one value per unit of the hook; the others hold one value each
    pooling: ClassVar[str] = "mean"  # how sentences are pooled into the responses the rule is fitted on

    def options(self, **values):
        """This rule's options from keyword values or strings; unknown names are an error."""
        return coerce_options(self.Options, f"gate rule '{self.name}'", values)

    def fit(self, pooled: Float[Tensor, "n d"], labels: Tensor, options) -> dict[str, Tensor]:
        """The rule's tensors for one hook from pooled responses and their labels (1 = toxic)."""
        raise NotImplementedError

    def neutral_sources(self, options) -> str:
        """Neutral text (`aura_tl.neutral_text` sources) added to the concept data as non-toxic when fitting."""
        return "none"

    def value(self, activation: Float[Tensor, "*rows d"], tensors: Mapping[str, Tensor]
              ) -> Float[Tensor, "*rows"] | Float[Tensor, "*rows d"]:
        """The gate in [0, 1] for each row of activations (units last; per-head hooks arrive flattened), or for
        each row and unit (a per-unit rule)."""
        raise NotImplementedError

    def refine(self, model, intervention, data, options, *, progress: bool = True):
        """The intervention after its gates were fitted hook by hook, refined with the model at hand (a rule that
        learns through the model does it here; `data` holds the concept sentences and the neutral text)."""
        return intervention

    def accuracy(self, pooled: Float[Tensor, "n d"], labels: Tensor, tensors: Mapping[str, Tensor]) -> float:
        """How often the gate is above 1/2 exactly on the toxic responses (training accuracy, 4 decimals)."""
        predicted = self.value(pooled, tensors) > 0.5
        return round(float((predicted == labels.bool()).float().mean()), 4)


RULES: Registry[GateRule] = Registry("gate rule", "aura_tl.gates",
                                    hint=", or register one (aura_tl.gating.register_gate)")
GATES = RULES.entries


def register_gate(cls: type[GateRule]) -> type[GateRule]:
    """Class decorator: `@register_gate class MyGate(GateRule): name = "mine" ...`."""
    return RULES.register(cls, check=lambda cls: None if cls.tensors else "a gate rule declares the tensors it stores")


def gate_names() -> list[str]:
    return RULES.names()


def get_gate(name: str) -> GateRule:
    return RULES.get(name)


def parse_gate(value: Any) -> str | None:
    """The `gate` option: a rule name; true/yes/1 -> `DEFAULT_GATE`; false/no/0/none -> None (ungated)."""
    if value is None or value is False:
        return None
    if value is True:
        return DEFAULT_GATE
    text = str(value).strip()
    if text.lower() in ("1", "true", "yes", "on"):
        return DEFAULT_GATE
    if text.lower() in ("0", "false", "no", "off", "none", "null", ""):
        return None
    return text


def gate_option_names() -> dict[str, str]:
    """option name -> the rule that declares it, over every registered rule."""
    return {field.name: name for name in gate_names() for field in dataclasses.fields(GATES[name].Options)}


def rule_of(metadata: Mapping, tensors: Mapping[str, Mapping[str, Tensor]]) -> GateRule | None:
    """The gate rule of an intervention: the one its metadata names (`gate.rule`), else, for files written before
    rules had names, the registered rule whose tensors every hook carries; None when it is not gated."""
    record = metadata.get("gate")
    if isinstance(record, Mapping) and record.get("rule"):
        return get_gate(str(record["rule"]))
    for name in gate_names():
        if all(set(GATES[name].tensors) <= set(named) for named in tensors.values()):
            return GATES[name]
    return None


def gate_at(activation: Tensor, value: Callable[[Tensor], Tensor]) -> Tensor:
    """The gate per position of a hook's activation ([batch, pos]), or per position and unit (the activation's
    shape) for a per-unit rule; per-head activations [batch, pos, head, d] are read head-major."""
    flat = activation.flatten(-2) if activation.ndim == 4 else activation
    gate = value(flat)
    return gate.view(activation.shape) if gate.shape == flat.shape else gate


def gated_hook(activation: Tensor, hook, inner: Callable, value: Callable[[Tensor], Tensor]) -> Tensor:
    """a + g(a) (inner(a) - a): the method's edit, scaled per position (or per position and unit) by the gate read
    before it."""
    gate = gate_at(activation, value)
    gate = gate.view(*gate.shape, *([1] * (activation.ndim - gate.ndim)))
    return activation + gate * (inner(activation, hook) - activation)


def gated(fn: Callable, rule: GateRule, tensors: Mapping[str, Tensor]) -> Callable:
    """`fn` (a TransformerLens hook) gated by `rule` with one hook's gate tensors."""
    return partial(gated_hook, inner=fn, value=partial(rule.value, tensors={k: tensors[k] for k in rule.tensors}))


# --- the built-in rule ---------------------------------------------------------------------------------------------

def fit_gate(pooled: Float[Tensor, "n d"], labels: Tensor, l2: float = 1e-3, steps: int = 50) -> dict[str, Tensor]:
    """w, b of a probe gate for pooled responses with labels (1 = toxic): the unit difference-of-means direction,
    scaled with a bias by Newton steps of a 1-D L2-regularised logistic regression on the projections (float64)."""
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
    penalty = l2 * torch.diag(torch.tensor([1.0, 0.0], dtype=torch.float64))  # the intercept is not penalised
    for _ in range(steps):
        p = torch.sigmoid(features @ theta)
        gradient = features.T @ (p - y) / len(y) + penalty @ theta
        hessian = (features.T * (p * (1 - p))) @ features / len(y) + penalty
        step = torch.linalg.solve(hessian + 1e-12 * torch.eye(2, dtype=torch.float64), gradient)
        theta = theta - step
        if step.abs().max() < 1e-10:
            break
    slope, intercept = theta[0] / spread, theta[1] - theta[0] * center / spread
    return {"gate_w": (slope * direction).float(), "gate_b": intercept.reshape(1).float()}


def gate_value(activation: Float[Tensor, "*rows d"], w: Tensor, b: Tensor) -> Float[Tensor, "*rows"]:
    """sigmoid(w . a + b) per row (position or pooled response)."""
    return torch.sigmoid(activation @ w + b)


@dataclass
class ProbeGateOptions:
    gate_l2: float = option(1e-3, "L2 penalty of the probe gate's 1-D logistic fit (gate=probe)")

    def __post_init__(self) -> None:
        if not self.gate_l2 >= 0:
            raise ValueError(f"gate_l2 must be >= 0, got {self.gate_l2}")


@register_gate
class ProbeGate(GateRule):
    name = "probe"
    summary = "sigmoid(w . a + b): a difference-of-means direction, Platt-scaled, fitted per hook"
    Options = ProbeGateOptions
    tensors = ("gate_w", "gate_b")
    unit_tensors = ("gate_w",)
    pooling = "mean"  # the gate reads one token's activation; mean pooling keeps the sentence's average there

    def fit(self, pooled, labels, options):
        return fit_gate(pooled, labels, l2=options.gate_l2)

    def value(self, activation, tensors):
        return gate_value(activation, tensors["gate_w"], tensors["gate_b"])


# --- a gate learned on single positions ------------------------------------------------------------------------------

TOKEN_POSITIONS = 16  # positions read per text (evenly spread, first and last included)
# neutral text sources with a count, declared once (their readers: aura_tl.neutral_text.READERS)
NEUTRAL_SOURCES = ("own", "wikitext", "piqa", "hellaswag", "continued", "paradetox", "davidson")
COUNTED_SOURCE = re.compile(rf"({'|'.join(NEUTRAL_SOURCES)}):(\d+)")
SOURCE_NAMES = ", ".join(f"{name}:N" for name in NEUTRAL_SOURCES)


def check_sources(sources: str) -> None:
    """A ValueError for an item of `sources` written like a counted source (`name:...`) that is not one, unless a
    file has that name: checked when the option is set, before any text is read."""
    for item in (s.strip() for s in str(sources).split(",")):
        if re.match(r"[a-z]+:", item) and not COUNTED_SOURCE.fullmatch(item) and not Path(item).is_file():
            raise ValueError(f"gate_neutral {item!r}: write {SOURCE_NAMES} with N a count (or a file)")


def balanced_weights(y: Tensor) -> Tensor:
    """Weights per row (labels 1 = toxic, any shape) giving each class half of the total, so that the many neutral
    rows do not outvote the toxic ones; a ValueError unless both classes are there."""
    if not ((y == 0).any() and (y == 1).any()):
        raise ValueError("a gate needs toxic and non-toxic rows")
    return torch.where(y == 1, 0.5 / (y == 1).sum(), 0.5 / (y == 0).sum())


def fit_logistic(x: Float[Tensor, "n d"], y: Tensor, l2: float, max_iter: int = 200) -> tuple[Tensor, Tensor]:
    """w, b of an L2-regularised logistic regression with both classes weighted equally, fitted (L-BFGS, float64)
    on standardised features and returned for raw ones: sigmoid(x . w + b)."""
    with torch.inference_mode(False), torch.enable_grad():  # causal fitting runs under inference mode
        x, y = x.clone().double(), y.clone().double()
        weights = balanced_weights(y)
        center, scale = x.mean(0), x.std(0).clamp(min=1e-6)
        z = (x - center) / scale
        w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

        def loss() -> Tensor:
            optimizer.zero_grad()
            value = (weights * torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y, reduction="none")
                     ).sum() + l2 * (w @ w) / 2
            value.backward()
            return value

        optimizer.step(loss)
        w_raw = (w / scale).detach()
        return w_raw.float().clone(), (b - center @ w_raw).detach().float().clone()


def token_rows(pooled: Float[Tensor, "n_k d"], labels: Tensor) -> tuple[Float[Tensor, "m d"], Tensor]:
    """The rows a token gate learns from, out of `TOKEN_POSITIONS` spread positions per text: every position of a
    non-toxic text (0), and the later half of a toxic one's (1), where the toxic words have been read."""
    k = TOKEN_POSITIONS
    if pooled.shape[0] != len(labels) * k:
        raise ValueError(f"a token gate reads {k} positions per text (pooling positions:{k}): got "
                         f"{pooled.shape[0]} rows for {len(labels)} texts")
    per_text = pooled.reshape(len(labels), k, -1)
    labels = torch.as_tensor(labels).bool()
    toxic = per_text[labels][:, k // 2:].flatten(0, 1)
    other = per_text[~labels].flatten(0, 1)
    return torch.cat([toxic, other]), torch.cat([torch.ones(len(toxic)), torch.zeros(len(other))])


@dataclass
class TokenGateOptions:
    gate_token_l2: float = option(1e-3, "L2 penalty (on standardised activations) of the token gate's logistic fit "
                                        "(gate=token)")
    gate_neutral: str = option("own:256,wikitext:300", "neutral text the token gate learns to stay closed on, "
                               "beside the non-toxic sentences: own:N (the model's own samples), wikitext:N, piqa:N, "
                               "hellaswag:N (task-length texts no report reads), continued:N (learn prompts continued "
                               "by the model), paradetox:N (human non-toxic rewrites), davidson:N (tweets labelled "
                               "'neither'), a file (a text a line), none (aura_tl.neutral_text)")

    def __post_init__(self) -> None:
        if not self.gate_token_l2 >= 0:
            raise ValueError(f"gate_token_l2 must be >= 0, got {self.gate_token_l2}")
        check_sources(self.gate_neutral)


@register_gate
class TokenGate(ProbeGate):
    """The probe's form and tensors (its `value`), fitted on single positions."""

    name = "token"
    summary = ("sigmoid(w . a + b) learned on single positions: toxic sentences' later tokens against non-toxic "
               "sentences' and neutral text's tokens")
    Options = TokenGateOptions
    pooling = f"positions:{TOKEN_POSITIONS}"

    def neutral_sources(self, options) -> str:
        return options.gate_neutral

    def fit(self, pooled, labels, options):
        x, y = token_rows(pooled, labels)
        w, b = fit_logistic(x, y, options.gate_token_l2)
        return {"gate_w": w, "gate_b": b.reshape(1)}

    def accuracy(self, pooled, labels, tensors):
        """Balanced accuracy of the token gate on the rows it learned from (toxic later positions above 1/2, others
        below); for the per-unit rule, of its token factor."""
        x, y = token_rows(pooled, labels)
        predicted = gate_value(x, tensors["gate_w"], tensors["gate_b"]) > 0.5
        return round(float(((predicted[y == 1]).float().mean() + (~predicted[y == 0]).float().mean()) / 2), 4)


# --- per-unit gates --------------------------------------------------------------------------------------------------

def fit_logistic_per_unit(x: Float[Tensor, "n d"], y: Tensor, l2: float, steps: int = 100
                          ) -> tuple[Float[Tensor, " d"], Float[Tensor, " d"]]:
    """slope s, bias c per unit of d independent 1-D logistic regressions sigmoid(s_j x_j + c_j), both classes
    weighted equally, L2 on the slope of the standardised unit; Newton steps on all units at once (float64)."""
    x, y = x.double(), y.double()[:, None]
    weights = balanced_weights(y)
    center, scale = x.mean(0), x.std(0).clamp(min=1e-6)
    z = (x - center) / scale
    slope, bias = torch.zeros(x.shape[1], dtype=torch.float64), torch.zeros(x.shape[1], dtype=torch.float64)
    for _ in range(steps):
        p = torch.sigmoid(z * slope + bias)
        residual, curvature = weights * (p - y), weights * p * (1 - p)
        g_s, g_c = (residual * z).sum(0) + l2 * slope, residual.sum(0)
        h_ss, h_sc, h_cc = (curvature * z * z).sum(0) + l2, (curvature * z).sum(0), curvature.sum(0)
        det = (h_ss * h_cc - h_sc * h_sc).clamp(min=1e-18)
        step_s, step_c = (h_cc * g_s - h_sc * g_c) / det, (h_ss * g_c - h_sc * g_s) / det
        slope, bias = slope - step_s, bias - step_c
        if max(float(step_s.abs().max()), float(step_c.abs().max())) < 1e-10:
            break
    return (slope / scale).float(), (bias - slope * center / scale).float()


@dataclass
class UnitGateOptions(TokenGateOptions):
    gate_unit_l2: float = option(1e-2, "L2 penalty (on each standardised unit) of the per-unit logistic fits "
                                       "(gate=unit)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.gate_unit_l2 >= 0:
            raise ValueError(f"gate_unit_l2 must be >= 0, got {self.gate_unit_l2}")


@register_gate
class UnitGate(TokenGate):
    """The token gate, closed further per unit where that unit's own value looks non-toxic (in the spirit of GAPS's
    per-unit gates): g_j(a) = t(a) min(1, u_j(a_j) / m_j), t the token gate, u_j a 1-D logistic regression of unit j
    on the token gate's rows, m_j its mean over the toxic rows. A unit that does not tell the classes apart keeps the
    token gate (u_j / m_j ~ 1); one that does is edited less where its value sits with the non-toxic rows."""

    name = "unit"
    summary = ("the token gate times a per-unit factor min(1, u_j(a_j) / m_j): each unit's own logistic fit, "
               "normalised on the toxic rows")
    Options = UnitGateOptions
    tensors = ("gate_w", "gate_b", "gate_unit_slope", "gate_unit_bias", "gate_unit_norm")
    unit_tensors = ("gate_w", "gate_unit_slope", "gate_unit_bias", "gate_unit_norm")

    def fit(self, pooled, labels, options):
        x, y = token_rows(pooled, labels)
        w, b = fit_logistic(x, y, options.gate_token_l2)
        slope, bias = fit_logistic_per_unit(x, y, options.gate_unit_l2)
        norm = torch.sigmoid(x[y == 1] * slope + bias).mean(0).clamp(min=1e-6)
        return {"gate_w": w, "gate_b": b.reshape(1), "gate_unit_slope": slope, "gate_unit_bias": bias,
                "gate_unit_norm": norm}

    def value(self, activation, tensors):
        token = gate_value(activation, tensors["gate_w"], tensors["gate_b"])
        unit = torch.sigmoid(activation * tensors["gate_unit_slope"] + tensors["gate_unit_bias"])
        return token[..., None] * (unit / tensors["gate_unit_norm"]).clamp(max=1.0)


"""Gates tuned through the model (in the spirit of DSAS, arXiv 2512.03661, a per-token, per-layer gate learned for
the job): starting from fitted gates of the sigmoid(w . a + b) form, every hook's w and b are optimised together by
backpropagation through the frozen model, so that the gated edit's next-token distributions match the ungated
edit's on toxic text and the unsteered model's on neutral text. A fitted gate answers "does this position look
toxic?"; a tuned one "does the edit here change what the model says where it should, and only there?".

Loss per step, KL(teacher || gated) per position, averaged over the positions each part weighs:
    toxic text (`gate_tune_toxic`):                         teacher = the ungated edit at `strength`
        concept: the concept data's toxic sentences, their later half (as the token gate's toxic rows)
        on-policy: the model's own continuations of `learn` prompts scored toxic, after their prompt, from the
        prompt's last position on (where the edit has to act: the next tokens the model was about to say)
    + keep x neutral text, every position (non-toxic sentences, own samples, WikiText): teacher = the unsteered model
    + clean continuations (`gate_tune_clean`, optional): the model's own non-toxic continuations of the prompts
        that led it to toxic ones, from the prompt's last position on: teacher = the unsteered model, weighted
        `gate_tune_clean_weight` against the toxic part. The toxic part alone teaches the gate to open on a toxic
        prompt's continuation whatever it says; this part teaches it to leave a clean one alone (measured on
        SmolLM2: the +2 % rule then goes further, lambda 12 against 7.5 at equal relevance, with no toxicity gain
        shown, and held-out near-toxic text costs half; docs/results/sites.md, stop 52).
The same concept data and neutral text as the fitted gate; no text the report or calibration reads.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import trange

from aura_tl.backends import backend_of, hooks_applied
from aura_tl.calibrate import short_rows
from aura_tl.gating import TokenGate, TokenGateOptions, gate_value, gated_hook, register_gate
from aura_tl.hooks import last_block
from aura_tl.intervention import Intervention, hook_function
from aura_tl.methods.lineas import ShuffledPasses, frozen
from aura_tl.models import hf_tokenizer, pad_token_id, start_token_id
from aura_tl.onpolicy import check_source, clean_pairs, joined, source_rows, toxic_pairs
from aura_tl.options import option, with_default
from aura_tl.responses import Batch, make_batch

log = logging.getLogger(__name__)
TUNED_TENSORS = ("gate_w", "gate_b")  # the form tuned: g(a) = sigmoid(w . a + b) per position


@dataclass(frozen=True)
class Tuning:
    """How gates are tuned (the `tuned` rule's options, resolved)."""

    strength: float  # lambda of the edit the gates learn to open and close
    steps: int
    lr: float  # Adam, on w in units of each unit's spread and on b; cosine-decayed
    keep: float  # weight of the neutral text's KL against the toxic text's
    batch: int  # toxic and neutral texts (and clean continuations) per step, each
    max_tokens: int  # tokens per text after BOS
    seed: int
    clean_weight: float  # of the clean continuations' KL, against the toxic text's (when there are any)


@dataclass(frozen=True)
class LossRows:
    """Token rows (BOS first) and, per row, the first position whose next-token loss counts."""

    rows: list[list[int]]
    starts: list[int]


def rows_from_bos(model, texts: list[str], max_tokens: int) -> list[list[int]]:
    """Each text as BOS + its first `max_tokens` tokens (empty texts dropped), as calibration reads short texts."""
    bos = start_token_id(hf_tokenizer(model))
    return [[bos, *row] for row in short_rows(model, texts, row_tokens=max_tokens)]


def later_halves(model, texts: list[str], max_tokens: int) -> LossRows:
    """Texts from BOS, the loss on each row's later half of positions (as the token gate's toxic rows)."""
    rows = rows_from_bos(model, texts, max_tokens)
    return LossRows(rows, [len(row) // 2 for row in rows])


def continuations(model, pairs: list[tuple[str, str]], max_tokens: int) -> LossRows:
    """Each (prompt, continuation) as BOS + prompt + continuation (at most `max_tokens` after BOS: the prompt cut
    from its start, then the continuation from its end), the loss from the prompt's last position on: the position
    that predicts the continuation's first token. A continuation stored stripped gets back its leading space."""
    tokenizer = hf_tokenizer(model)
    bos, rows, starts = start_token_id(tokenizer), [], []
    for prompt, continuation in pairs:
        if not continuation.strip():
            continue
        head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(joined(prompt, continuation), add_special_tokens=False)["input_ids"]
        if not head or ids[:len(head)] != head:
            continue  # the prompt's tokens merged into the continuation's: no clean boundary
        cut = max(0, min(len(ids) - max_tokens, len(head) - 1))
        rows.append([bos, *ids[cut:cut + max_tokens]])
        starts.append(len(head) - cut)
    return LossRows(rows, starts)


def padded(rows: list[list[int]], pad: int, device) -> Batch:
    """Rows (BOS first) right-padded as every training pass pads them (`make_batch`: explicit attention mask)."""
    return make_batch(rows, [[True] * len(row) for row in rows], pad, device)


def counted_from(mask: Float[Tensor, "b p"], starts: list[int]) -> Float[Tensor, "b p"]:
    """The mask kept only from each row's start on."""
    first = torch.tensor(starts, device=mask.device)[:, None]
    return mask * (torch.arange(mask.shape[1], device=mask.device)[None] >= first)


def mean_kl(teacher: Float[Tensor, "b p v"], student: Float[Tensor, "b p v"], weights: Float[Tensor, "b p"]) -> Tensor:
    """Weighted mean over positions of KL(teacher || student), both log-probabilities."""
    kl = (teacher.exp() * (teacher - student)).sum(-1)
    return (kl * weights).sum() / weights.sum().clamp(min=1)


def spreads_at(model, names: list[str], batch: Batch) -> dict[str, Tensor]:
    """Each hook's per-unit standard deviation (heads flattened) over the real positions of one unsteered batch."""
    found: dict[str, Tensor] = {}
    real = batch.attention_mask.bool()

    def record(name):
        def hook(activation, hook):
            flat = activation.flatten(-2) if activation.ndim == 4 else activation
            found[name] = flat[real].float().std(0).clamp(min=1e-6)
        return hook

    with torch.no_grad(), hooks_applied(model, [(n, record(n)) for n in names]):
        backend_of(model).run_through(model, batch.tokens, batch.attention_mask, last_block(names))
    return found


class _Gates(torch.nn.Module):
    """Per hook w = w0 + delta / spread and b = b0 + epsilon, delta and epsilon starting at 0 (the fitted gate)."""

    def __init__(self, fitted: dict[str, dict[str, Tensor]], spreads: dict[str, Tensor]):
        super().__init__()
        self.names = list(fitted)
        self.w0 = {n: fitted[n]["gate_w"].float() for n in self.names}
        self.b0 = {n: fitted[n]["gate_b"].float() for n in self.names}
        self.spreads = spreads
        self.delta = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros_like(self.w0[n])) for n in self.names])
        self.epsilon = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros_like(self.b0[n])) for n in self.names])

    def wb(self, index: int) -> tuple[Tensor, Tensor]:
        name = self.names[index]
        return self.w0[name] + self.delta[index] / self.spreads[name], self.b0[name] + self.epsilon[index]

    def value(self, index: int, activation: Tensor) -> Tensor:
        w, b = self.wb(index)
        return gate_value(activation, w, b)

    def tensors(self) -> dict[str, dict[str, Tensor]]:
        return {n: dict(zip(TUNED_TENSORS, (t.detach().float().cpu().clone() for t in self.wb(i))))
                for i, n in enumerate(self.names)}


class _Texts:
    """Token rows and their starts handed out in seeded shuffled passes."""

    def __init__(self, rows: LossRows, seed: int):
        self.rows, self.starts, self.passes = rows.rows, rows.starts, ShuffledPasses(len(rows.rows), seed)

    def take(self, k: int) -> tuple[list[list[int]], list[int]]:
        picked = self.passes.take(k)
        return [self.rows[i] for i in picked], [self.starts[i] for i in picked]


def tune_gates(model, edits: dict[str, Callable], fitted: dict[str, dict[str, Tensor]],
               toxic: LossRows, neutral: list[str], tuning: Tuning, *, clean: LossRows | None = None,
               progress: bool = True) -> tuple[dict[str, dict[str, Tensor]], dict]:
    """Tuned `gate_w`, `gate_b` per hook, from the `fitted` ones, for the ungated hook functions `edits` (at
    `tuning.strength`), and a record of the run (loss per part, first and last, every 25 steps; seconds). `toxic`
    (and `clean`, kept as the unsteered model says it): rows and the first position of each whose loss counts
    (`later_halves`, `continuations`)."""
    started = time.perf_counter()
    device = model.cfg.device
    pad = pad_token_id(hf_tokenizer(model))
    neutral_all = rows_from_bos(model, neutral, tuning.max_tokens)
    toxic_rows, neutral_rows = _Texts(toxic, tuning.seed), _Texts(LossRows(neutral_all, [0] * len(neutral_all)),
                                                                  tuning.seed + 1)
    clean_rows = _Texts(clean, tuning.seed + 2) if clean is not None else None
    if not toxic_rows.rows or not neutral_rows.rows or (clean_rows is not None and not clean_rows.rows):
        raise ValueError("tuning gates needs toxic and neutral texts (and clean continuations when asked for)")
    names = list(fitted)
    first = padded(toxic_rows.rows[:tuning.batch] + neutral_rows.rows[:tuning.batch], pad, device)
    gates = _Gates(fitted, spreads_at(model, names, first)).to(device)
    full = [(n, edits[n]) for n in names]
    student = [(n, partial(gated_hook, inner=edits[n], value=partial(gates.value, i))) for i, n in enumerate(names)]
    optimiser = torch.optim.Adam(gates.parameters(), lr=tuning.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=tuning.steps)
    history: dict[str, list[float]] = {"toxic": [], "neutral": [], **({"clean": []} if clean_rows else {})}
    with frozen(model), torch.inference_mode(False):
        bar = trange(tuning.steps, desc="tuning gates", disable=not progress)
        for _ in bar:
            (tox, starts), (neu, _) = toxic_rows.take(tuning.batch), neutral_rows.take(tuning.batch)
            cln, clean_starts = clean_rows.take(tuning.batch) if clean_rows else ([], [])
            batch = padded(tox + neu + cln, pad, device)
            tokens, attention, mask = batch.tokens, batch.attention_mask, batch.attention_mask.float()
            k, m = len(tox), len(tox) + len(neu)
            with torch.no_grad():
                with hooks_applied(model, full):
                    steered = model(tokens[:k], attention_mask=attention[:k]).float().log_softmax(-1)
                unsteered = model(tokens[k:], attention_mask=attention[k:]).float().log_softmax(-1)
            with torch.enable_grad(), hooks_applied(model, student):
                gated_logp = model(tokens, attention_mask=attention).float().log_softmax(-1)
                parts = {"toxic": mean_kl(steered, gated_logp[:k], counted_from(mask[:k], starts)),
                         "neutral": mean_kl(unsteered[:m - k], gated_logp[k:m], mask[k:m])}
                if cln:
                    parts["clean"] = mean_kl(unsteered[m - k:], gated_logp[m:], counted_from(mask[m:], clean_starts))
                loss = parts["toxic"] + tuning.keep * parts["neutral"] + tuning.clean_weight * parts.get("clean", 0.0)
                optimiser.zero_grad()
                loss.backward()
            optimiser.step()
            schedule.step()
            for part, value in parts.items():
                history[part].append(float(value.detach()))
            bar.set_postfix({part: f"{h[-1]:.4f}" for part, h in history.items()})
    record = {"strength": tuning.strength, "steps": tuning.steps, "lr": tuning.lr, "keep": tuning.keep,
              **({"clean_weight": tuning.clean_weight} if clean_rows else {}),
              "batch": tuning.batch, "max_tokens": tuning.max_tokens, "texts": {"toxic": len(toxic_rows.rows),
              "neutral": len(neutral_rows.rows), **({"clean": len(clean_rows.rows)} if clean_rows else {})},
              "loss": {part: {"first": h[0], "last": h[-1], "every_25": h[::25]} for part, h in history.items()},
              "seconds": round(time.perf_counter() - started, 3)}
    return gates.tensors(), record


def tuned_intervention(model, intervention, data, options, *, progress: bool = True):
    """`intervention` (gated by a sigmoid(w . a + b) rule, fitted) with every hook's gate tuned through `model` on
    `data` (label 1 = toxic, 0 = non-toxic and neutral text) by the `tuned` rule's `options`; the run's record goes
    into metadata `gate.tuned`."""
    strength = float(options.gate_tune_strength or min(intervention.strength, TUNE_STRENGTH_CAP))
    spec = intervention.spec
    edits = {hook: hook_function(spec, None, named, strength, intervention.metadata, model.cfg.device,
                                 model.cfg.dtype) for hook, named in intervention.tensors.items()}
    edits = {hook: fn for hook, fn in edits.items() if fn is not None}
    if not edits:
        log.warning("the edit changes nothing at strength %g: the gates are left as fitted", strength)
        return intervention
    fitted = {hook: {k: intervention.tensors[hook][k] for k in TUNED_TENSORS} for hook in edits}
    neutral = [t for t, label in zip(data.texts, data.labels) if label == 0]
    sides = (options.gate_tune_toxic, options.gate_tune_clean)
    onpolicy = {source: source_rows(model, source, progress=progress)  # a file both sides use is read once
                for source in dict.fromkeys(sides) if source not in ("concept", "none")}
    if options.gate_tune_toxic == "concept":
        toxic = later_halves(model, [t for t, label in zip(data.texts, data.labels) if label == 1],
                             options.gate_tune_tokens)
    else:
        toxic = continuations(model, toxic_pairs(onpolicy[options.gate_tune_toxic]), options.gate_tune_tokens)
    tuning = Tuning(strength, options.gate_tune_steps, options.gate_tune_lr, options.gate_tune_keep,
                    options.gate_tune_batch, options.gate_tune_tokens,
                    int(intervention.metadata.get("options", {}).get("seed", 0)), options.gate_tune_clean_weight)
    clean = None
    if options.gate_tune_clean != "none":
        clean = continuations(model, clean_pairs(onpolicy[options.gate_tune_clean]), options.gate_tune_tokens)
    tensors, record = tune_gates(model, edits, fitted, toxic, neutral, tuning, clean=clean, progress=progress)
    record = {**record, "toxic_text": options.gate_tune_toxic,
              **({"clean_text": options.gate_tune_clean} if clean is not None else {})}
    named = {hook: {**values, **tensors.get(hook, {})} for hook, values in intervention.tensors.items()}
    metadata = {**intervention.metadata, "gate": {**intervention.metadata["gate"], "tuned": record}}
    return dataclasses.replace(intervention, tensors=named, metadata=metadata)


# --- the rule -------------------------------------------------------------------------------------------------------

TUNE_STRENGTH_CAP = 4.0  # the lambda gates are tuned at unless told: a learned lambda above it is calibration's cap


@dataclass
class TunedGateOptions(TokenGateOptions):
    # keep 10, 100 steps: why, measured (keep 1 opens the gate on neutral text too): docs/results/defaults.md. The
    # text sources are the default intervention's recipe (its neutral side, the model's own toxic and clean
    # continuations of learn prompts: docs/results/sites.md, stops 49-52)
    gate_neutral: str = with_default(TokenGateOptions, "gate_neutral",
                                     "own:256,wikitext:300,piqa:250,hellaswag:250,continued:250")
    gate_tune_steps: int = option(100, "optimisation steps of the tuned gate (gate=tuned)")
    gate_tune_lr: float = option(0.01, "Adam's first learning rate for the tuned gate (w in units of each unit's "
                                       "spread, and b)")
    gate_tune_keep: float = option(10.0, "weight of neutral text staying as the unsteered model says it, against "
                                        "toxic text moving as the ungated edit moves it (gate=tuned)")
    gate_tune_strength: float | None = option(None, "lambda of the edit the tuned gate learns to open and close "
                                                    f"(default: the intervention's learned strength, at most "
                                                    f"{TUNE_STRENGTH_CAP:g})")
    gate_tune_batch: int = option(8, "toxic and neutral texts (and clean continuations) per tuning step, each "
                                     "(gate=tuned)")
    gate_tune_tokens: int = option(48, "tokens read per text while tuning (gate=tuned)")
    gate_tune_toxic: str = option("onpolicy:10", "toxic text the tuned gate learns to open on: concept (the concept "
                                  "data's toxic sentences, their later half), onpolicy:N (the model's own N "
                                  "continuations of each learn prompt, those scored toxic, from the prompt's last "
                                  "token on), or an `aura-tl onpolicy` file (gate=tuned)")
    gate_tune_clean: str = option("onpolicy:10", "clean continuations the tuned gate learns to leave as they are: "
                                  "none, onpolicy:N or an `aura-tl onpolicy` file (the non-toxic continuations of the "
                                  "prompts with a toxic one there, from the prompt's last token on; gate=tuned)")
    gate_tune_clean_weight: float = option(1.0, "weight of the clean continuations staying as the unsteered model "
                                                "says them, against toxic text moving (gate=tuned)")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("gate_tune_steps", "gate_tune_batch", "gate_tune_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.gate_tune_lr > 0:
            raise ValueError(f"gate_tune_lr must be > 0, got {self.gate_tune_lr}")
        for name in ("gate_tune_keep", "gate_tune_clean_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.gate_tune_toxic != "concept":
            check_source(self.gate_tune_toxic, "gate_tune_toxic (unless concept)")
        if self.gate_tune_clean != "none":
            check_source(self.gate_tune_clean, "gate_tune_clean (unless none)")
        if self.gate_tune_strength is not None and not self.gate_tune_strength > 0:
            raise ValueError(f"gate_tune_strength must be > 0, got {self.gate_tune_strength}")


@register_gate
class TunedGate(TokenGate):
    """The token gate's form and fit, then tuned through the model (`aura_tl.gate_tuning`)."""

    name = "tuned"
    summary = ("the token gate, then tuned through the frozen model: the gated edit matches the ungated one on toxic "
               "text and the unsteered model on neutral text")
    Options = TunedGateOptions

    def refine(self, model, intervention, data, options, *, progress: bool = True):
        return tuned_intervention(model, intervention, data, options, progress=progress)

"""What every method declares (the `Method` interface), the options most methods share, and the metadata every
learned intervention carries."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from aura_tl._version import __version__
from aura_tl.gating import gate_option_names, get_gate, parse_gate
from aura_tl.hooks import DEFAULT_HOOKS
from aura_tl.options import as_dict, coerce_options, internal, option, option_names
from aura_tl.responses import check_sentence_pooling

HOOKS_HELP = ("hook pattern(s), comma-separated ('|' in lm-eval model_args); '*' is the layer, {1/2:} the later half of "
              "the blocks ({START:END}: block indices or fractions of the depth); short forms: hook_post, hook_attn_out, ...")
POOLING_HELP = ("how a sentence's tokens are pooled into one response per neuron: max, mean, last, or mean_last:K "
                "(the mean of its last K tokens, e.g. a continuation after its prompt)")
MAX_PER_CLASS_HELP = "cap on sentences per class (balanced sample)"
DATA_HELP = ("concept data: a Jigsaw/Davidson/RTP/ParaDetox/text,label file, a built-in set ('embedded', 'rtp-learn'), "
             "rtp:<split> with local RTP records, or onpolicy-pairs:N (the model's own N continuations of each RTP "
             "learn prompt, scored, as prompt-matched toxic / non-toxic pairs: aura_tl.onpolicy)")

STRENGTH_HELP = ("lambda: how far the intervention moves activations (0 = off, 1 = full; up to the method's "
                 "max_strength, 1 for most, above 1 extrapolates the edit)")
STEER_PROMPT_HELP = ("while continuing a prompt (generation, lm-eval's loglikelihood), edit its positions too (true) "
                     "or only from its last position on (false: the prompt's keys and values stay the unsteered "
                     "model's; aura_tl.prompt_scope)")
# the options a saved intervention takes at apply time (`aura-tl generate`, lm-eval's intervention=FILE): the
# `Intervention` fields of the same names
APPLY_OPTIONS = ("strength", "steer_prompt")
# the options calibrating a saved intervention again takes (`aura_tl.learn.recalibrated`, `aura-tl calibrate`): the
# strength searched up to, the budget, and the texts it holds on
CALIBRATE_OPTIONS = ("strength", "max_ppl_increase", "calibration_text", "calibration_panel")
GATE_HELP = ("conditional steering: scale each position's edit by a gate fitted at that hook, by the named gate rule "
             "(aura_tl.gating; true = probe, false = ungated), on the concept data (rtp-learn without one)")


@dataclass
class CommonOptions:
    """Options every method has."""

    # applied after learning; only calibration, which caps at it, makes it change what is learned
    strength: float = option(1.0, STRENGTH_HELP, learned=lambda options: options.max_ppl_increase is not None)
    steer_prompt: bool = option(True, STEER_PROMPT_HELP, learned=False)
    seed: int = option(0, "seed for data sampling and any sampling while learning")
    learn_batch_size: int = option(32, "sentences per forward pass while learning", aliases=("--batch-size",))
    max_ppl_increase: float | None = option(None, "calibrate: the strongest strength (<= the given one) whose "
                                            "perplexity increase stays within this many % on every text of "
                                            "calibration_panel")
    calibration_text: str | None = option(None, "text file for calibration (default: a WikiText-2 test slice)")
    # "text" keeps today's default as measured; "full" holds the budget on every kind (aura_tl.retention), and
    # calibrates the default down to lambda 0.44 on SmolLM2 (task-length texts bind): docs/results/retention-panel.md
    calibration_panel: str = option("text", "the texts calibration keeps the budget on: text (the calibration text, "
                                    "as long windows and as short paragraphs), full (also PIQA- and "
                                    "HellaSwag-length texts and the model's own continuations of non-toxic "
                                    "prompts, on slices the report never reads: aura_tl.retention) or near (full "
                                    "and near-toxic neutral text: ParaDetox rewrites, Davidson 'neither' tweets)",
                                    choices=("text", "full", "near"),
                                    learned=lambda options: options.max_ppl_increase is not None)
    gate: str | None = option(None, GATE_HELP, parse=parse_gate)
    gate_options: object | None = internal()  # the chosen gate rule's options object (`Method.options` sets it)

    def __post_init__(self) -> None:  # strength's range is the method's: Method.check_strength
        if self.learn_batch_size < 1:
            raise ValueError(f"learn_batch_size must be at least 1, got {self.learn_batch_size}")


@dataclass
class ConceptOptions(CommonOptions):
    """Methods learned from labelled concept sentences (toxic = 1) through pooled responses at some hooks."""

    # real sentences of the task (the RTP learn split, shipped): why, measured, in docs/results/defaults.md
    data: str = option("rtp-learn", DATA_HELP)
    max_per_class: int = option(500, MAX_PER_CLASS_HELP)
    hooks: str = option(DEFAULT_HOOKS, HOOKS_HELP)
    pooling: str = option("max", POOLING_HELP, parse=check_sentence_pooling)
    responses: str | None = option(None, "save pooled responses here and reuse them on the next learn (.safetensors)",
                                   learned=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_per_class < 1:
            raise ValueError(f"max_per_class must be at least 1, got {self.max_per_class}")


class Method:
    """A detoxification method. Subclasses set the class attributes and implement `learn` and `hook_fn`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line, shown by `aura-tl methods`
    Options: ClassVar[type] = ConceptOptions
    applies: ClassVar[tuple[str, ...]] = ()  # the tensors per hook that the hook function reads
    needs_data: ClassVar[bool] = True  # learned from concept sentences (`data`), or from something else
    # the largest lambda: 1 where lambda interpolates to a natural end (AurA's alpha, DeStein's fused vector); more
    # where the edit a + lambda (f(a) - a) can be extrapolated (transport maps), e.g. gated ones that edit little text
    max_strength: ClassVar[float] = 1.0

    def options(self, **values):
        """This method's options from keyword values or strings, the chosen gate rule's own options among them
        (`gate=probe, gate_l2=0.01`); unknown names and out-of-range values are errors."""
        owners = gate_option_names()
        gate_values = {k: values.pop(k) for k in list(values) if k in owners and k not in self.option_names()}
        options = coerce_options(self.Options, f"method '{self.name}'", values)
        self.check_strength(options.strength)
        if options.gate is not None:
            options.gate_options = get_gate(options.gate).options(**gate_values)
        elif gate_values:
            raise ValueError(f"{sorted(gate_values)}: options of gate rule '{owners[next(iter(gate_values))]}', "
                             "given without a gate: add gate=<rule> (or drop them)")
        return options

    @classmethod
    def option_names(cls) -> list[str]:
        """The names of this method's own options (a gate rule's options come on top, see `options`)."""
        return option_names(cls.Options)

    @classmethod
    def check_strength(cls, strength: float) -> float:
        """`strength` if it is within [0, max_strength], else a ValueError naming the method's range."""
        if not math.isfinite(float(strength)):
            raise ValueError(f"strength (lambda) must be a finite number, got {strength}")
        if float(strength) < 0.0:
            raise ValueError(f"strength (lambda) must be >= 0, got {strength}")
        if float(strength) > cls.max_strength:
            raise ValueError(f"strength (lambda) of {cls.name} must be in [0, {cls.max_strength:g}], got {strength}")
        return float(strength)

    def learn(self, model, data, options, *, progress: bool = True):
        """Learn an `Intervention` on `model` from `data` (None when `needs_data` is False)."""
        raise NotImplementedError

    def from_responses(self, model, responses, options, **metadata):
        """An `Intervention` from pooled responses the caller already holds (`aura_tl.responses_from_cache`)."""
        raise ValueError(f"method {self.name} is not learned from pooled responses")

    def hook_fn(self, tensors: dict[str, Tensor], strength: float, metadata: dict) -> Callable | None:
        """The TransformerLens hook applying one hook's tensors at `strength`; None when it would change nothing."""
        raise NotImplementedError

    def validate(self, intervention) -> None:
        """Every hook carries the tensors the hook function reads."""
        for hook, tensors in intervention.tensors.items():
            missing = [t for t in self.applies if t not in tensors]
            if missing:
                raise ValueError(f"{self.name} intervention lacks tensor(s) {missing} at {hook}")

    def summary_row(self, hook: str, tensors: dict[str, Tensor], strength: float, metadata: dict) -> dict:
        """One row of `aura-tl inspect` for one hook (column -> value)."""
        return {"hook": hook, "size": int(tensors[self.applies[0]].numel())}

    def plot(self, intervention, plt):
        """A matplotlib figure for `aura-tl inspect --plot`."""
        raise ValueError(f"method {self.name} has no plot")


def data_metadata(data) -> dict:
    """How concept data (`aura_tl.data.ConceptData`) is recorded in an intervention's metadata."""
    return {"source": data.source, "layout": data.layout, "n": len(data), "counts": data.counts, **data.info}


def base_metadata(options, **extra) -> dict:
    """The metadata every learned intervention carries: package version and the options it was learned with."""
    return {"version": __version__, "options": as_dict(options), **extra}


def format_table(rows: list[dict]) -> str:
    """Rows of equal keys as an aligned text table (floats to 4 decimals), with a header line."""
    if not rows:
        return "(no hooks)"
    columns = list(rows[0])
    cells = [[f"{row.get(c):.4f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns]
             for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))  # noqa: E731
    return "\n".join([line(columns)] + [line(r) for r in cells])

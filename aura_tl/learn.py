"""Learn an intervention by method name (the options are the method's own, see `aura_tl.methods`), its gates by
gate rule (`aura_tl.gating`), and its strength by calibration."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import torch
from torch import Tensor

from aura_tl.calibrate import calibrate_strength, calibration_text
from aura_tl.data import ConceptData, load_concept_data
from aura_tl.gating import GateRule, get_gate
from aura_tl.intervention import Intervention, hook_function
from aura_tl.methods import DEFAULT_METHOD, ConceptOptions, get_method
from aura_tl.neutral_text import neutral_texts
from aura_tl.options import as_dict
from aura_tl.responses import Responses, collect_responses_causal
from aura_tl.retention import CALIBRATION_SLICES, panel_rows, text_rows

log = logging.getLogger(__name__)
GATE_FIT_STRENGTH = 1.0  # gates read the method's own edit, so they do not depend on the lambda a user turns later


def learn_intervention(model, data: ConceptData | None = None, method: str = DEFAULT_METHOD, options=None, *,
                       progress: bool = True, **option_values) -> Intervention:
    """Learn `method` on `model`. `options` is the method's options dataclass, or give them as keywords
    (`hooks=..., strength=0.5, gate="probe"`); `data` defaults to the `data` option loaded with `max_per_class`
    and `seed`."""
    spec = get_method(method)
    if options is None:
        options = spec.options(**option_values)
    elif option_values:
        raise ValueError("give options either as an options object or as keywords, not both")
    if spec.needs_data and data is None:
        data = concept_data_for(options)
    if data is not None:
        data.require_both_classes()
    intervention = spec.learn(model, data, options, progress=progress)
    if options.gate:
        gate_data = data if data is not None else concept_data_for(ConceptOptions(seed=options.seed))
        intervention = learn_gates(model, intervention, gate_data, options.gate, options.gate_options,
                                   batch_size=options.learn_batch_size, progress=progress)
    if options.max_ppl_increase is not None:
        intervention = calibrated(model, intervention, options, data, progress=progress)
    return intervention.with_steer_prompt(options.steer_prompt)


def concept_data_for(options, layout: str = "auto") -> ConceptData:
    """The concept sentences a method's options name: `data`, balanced, capped at `max_per_class`, sampled with `seed`."""
    return load_concept_data(options.data, layout=layout, max_per_class=options.max_per_class, seed=options.seed)


def intervention_from_responses(model, responses: Responses, method: str = DEFAULT_METHOD,
                                **option_values) -> Intervention:
    """Learn `method` from pooled responses you already hold (`responses_from_cache(model.run_with_cache(...))`),
    without running the model again. AcT methods fit every hook on the responses as given (non-causally: the
    activations were recorded without the earlier layers' maps), so `causal=True` is refused here; `gate=<rule>`
    fits the gates on the same responses."""
    spec = get_method(method)
    if option_values.get("causal"):
        raise ValueError("causal estimation needs the model to run with earlier maps applied: use learn_intervention")
    if "causal" in spec.option_names():
        option_values["causal"] = False
    labels = responses.labels
    if not ((labels == 0).any() and (labels == 1).any()):
        raise ValueError("responses need both labels (1 = toxic, 0 = not) to learn from")
    options = spec.options(**option_values)
    intervention = spec.from_responses(model, responses, options)
    if options.gate:  # gates from the same responses (non-causal, as the maps here)
        intervention = gates_from_responses(intervention, responses, options.gate, options.gate_options)
    return intervention


def _rule_and_options(rule: str | GateRule, options) -> tuple[GateRule, object]:
    rule = get_gate(rule) if isinstance(rule, str) else rule
    return rule, options if options is not None else rule.options()


def _with_gates(intervention: Intervention, tensors: dict[str, dict[str, Tensor]], rule: GateRule, options,
                **record) -> Intervention:
    """`intervention` carrying the gate tensors, with metadata `gate` naming the rule, its options and the fit."""
    record = {"rule": rule.name, "options": as_dict(options), **record}
    return dataclasses.replace(intervention, tensors=tensors, metadata={**intervention.metadata, "gate": record})


def gates_from_responses(intervention: Intervention, responses: Responses, rule: str | GateRule = "probe",
                         options=None) -> Intervention:
    """`intervention` with a gate per hook fitted by `rule` on pooled responses you already hold (non-causal: they
    were recorded without the earlier hooks' gated edits; at the first hook this equals `learn_gates`)."""
    rule, options = _rule_and_options(rule, options)
    if type(rule).refine is not GateRule.refine:
        log.warning("gate rule '%s' is refined by running the model, which pooled responses cannot: its gates stay "
                    "as fitted (use learn_gates with the model)", rule.name)
    started = time.perf_counter()
    labels = torch.as_tensor(responses.labels)
    tensors, accuracy = {}, {}
    for hook, named in intervention.tensors.items():
        fitted = rule.fit(responses.pooled[hook], labels, options)
        tensors[hook] = {**named, **fitted}
        accuracy[hook] = rule.accuracy(responses.pooled[hook], labels, fitted)
    return _with_gates(intervention, tensors, rule, options, pooling=responses.metadata.get("pooling"),
                       data={"source": "responses", "n": len(labels)}, accuracy=accuracy, causal=False,
                       seconds=round(time.perf_counter() - started, 3))


def learn_gates(model, intervention: Intervention, data: ConceptData, rule: str | GateRule = "probe", options=None,
                *, at_strength: float = GATE_FIT_STRENGTH, batch_size: int = 32, progress: bool = True
                ) -> Intervention:
    """`intervention` with a gate fitted by `rule` at each of its hooks on `data` (concept sentences, 1 = toxic),
    causally: with the earlier hooks' gated edits applied at `at_strength`, with the neutral text the rule asks for
    added as non-toxic; per-hook training accuracy and timing go into metadata `gate`."""
    rule, options = _rule_and_options(rule, options)
    started = time.perf_counter()
    data = with_neutral_text(model, data, rule.neutral_sources(options), progress=progress)
    labels = torch.tensor(data.labels)
    spec, strength = intervention.spec, intervention.spec.check_strength(at_strength)
    tensors = {hook: dict(named) for hook, named in intervention.tensors.items()}
    accuracy: dict[str, float] = {}

    def estimate(name: str, pooled: Tensor) -> Callable | None:
        fitted = rule.fit(pooled, labels, options)
        tensors[name].update(fitted)
        accuracy[name] = rule.accuracy(pooled, labels, fitted)
        return hook_function(spec, rule, tensors[name], strength, intervention.metadata, model.cfg.device,
                             model.cfg.dtype)

    collect_responses_causal(model, data.texts, data.labels, intervention.hook_names, estimate, pooling=rule.pooling,
                             batch_size=batch_size, progress=progress)
    tensors = {hook: {k: v.clone() for k, v in named.items()}  # plain tensors, not inference-mode ones
               for hook, named in tensors.items()}
    fitted = _with_gates(intervention, tensors, rule, options, pooling=rule.pooling,
                         data={"source": data.source, "n": len(data)}, accuracy=accuracy, fitted_at_strength=strength,
                         seconds=round(time.perf_counter() - started, 3))
    return rule.refine(model, fitted, data, options, progress=progress)


def with_neutral_text(model, data: ConceptData, sources: str, *, progress: bool = True) -> ConceptData:
    """`data` with the neutral texts `sources` names added as non-toxic (`aura_tl.neutral_text`)."""
    extra = neutral_texts(model, sources, progress=progress)
    if not extra:
        return data
    return ConceptData([*data.texts, *extra], [*data.labels, *[0] * len(extra)], f"{data.source} + {sources}",
                       data.layout, data.info)


def calibrated(model, intervention: Intervention, options, data: ConceptData | None = None, *,
               progress: bool = True) -> Intervention:
    """The intervention at the strongest strength (up to the learned one) within the perplexity budget on every
    kind of text of the retention panel (`options.calibration_panel`: `aura_tl.retention` on calibration's slices,
    or the calibration text alone); the measurements go into its metadata under `calibration`. Without WikiText or
    a text of the user's, the text kinds read the concept data's non-toxic sentences (`data`, else rtp-learn),
    which also prompt the own continuations when RTP is not local."""
    data = data if data is not None else concept_data_for(ConceptOptions(seed=options.seed))
    neutral = [text for text, label in zip(data.texts, data.labels) if label == 0]
    text, source = calibration_text(options.calibration_text,
                                    fallback=("\n".join(neutral), f"the non-toxic sentences of {data.source}"))
    if options.calibration_panel in ("full", "near"):
        panel = panel_rows(model, text, CALIBRATION_SLICES, fallback_prompts=neutral,
                           near_toxic=options.calibration_panel == "near")
    else:
        panel = text_rows(model, text)
    strength, record = calibrate_strength(model, intervention, options.max_ppl_increase, panel, progress=progress)
    record.update(text=source, chosen_strength=strength, texts={name: len(rows) for name, rows in panel.items()})
    changes = ", ".join(f"{name} {record['base_ppl'][name]:.3f} -> {ppl:.3f}" for name, ppl in record["chosen_ppl"].items())
    log.warning("calibrated %s: strength %.4g keeps perplexity within +%g %% on %s and the panel (%s)",
                intervention.method, strength, options.max_ppl_increase, source, changes)
    return dataclasses.replace(intervention, metadata={**intervention.metadata, "calibration": record},
                               strength=strength)


__all__ = ["calibrated", "concept_data_for", "gates_from_responses", "intervention_from_responses", "learn_gates",
           "learn_intervention"]

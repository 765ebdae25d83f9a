"""Learn an intervention by method name: the options are the method's own (see `aura_tl.methods`)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence

from aura_tl._version import __version__
from aura_tl.data import ConceptData, load_concept_data
from aura_tl.intervention import Intervention
from aura_tl.methods import DEFAULT_METHOD, ConceptOptions, get_method

log = logging.getLogger(__name__)


def learn_intervention(model, data: ConceptData | None = None, method: str = DEFAULT_METHOD, options=None, *,
                       progress: bool = True, **option_values) -> Intervention:
    """Learn `method` on `model`. `options` is the method's options dataclass, or give them as keywords
    (`hooks=..., strength=0.5`); `data` defaults to the `data` option loaded with `max_per_class` and `seed`."""
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
        from aura_tl.gating import learn_gates

        gate_data = data if data is not None else concept_data_for(ConceptOptions(seed=options.seed))
        intervention = learn_gates(model, intervention, gate_data, batch_size=options.learn_batch_size,
                                   progress=progress)
    if options.max_ppl_increase is not None:
        intervention = calibrated(model, intervention, options, progress=progress)
    return intervention


def concept_data_for(options, layout: str = "auto") -> ConceptData:
    """The concept sentences a method's options name: `data`, balanced, capped at `max_per_class`, sampled with `seed`."""
    return load_concept_data(options.data, layout=layout, max_per_class=options.max_per_class, seed=options.seed)


def intervention_from_responses(model, responses, method: str = DEFAULT_METHOD, **option_values) -> Intervention:
    """Learn `method` from pooled responses you already hold (`responses_from_cache(model.run_with_cache(...))`),
    without running the model again. AcT methods fit every hook on the responses as given (non-causally: the
    activations were recorded without the earlier layers' maps), so `causal=True` is refused here; `gate=true` fits
    the gates on the same responses."""
    spec = get_method(method)
    if option_values.get("causal"):
        raise ValueError("causal estimation needs the model to run with earlier maps applied: use learn_intervention")
    if any(f.name == "causal" for f in dataclasses.fields(spec.Options)):
        option_values["causal"] = False
    labels = responses.labels
    if not ((labels == 0).any() and (labels == 1).any()):
        raise ValueError("responses need both labels (1 = toxic, 0 = not) to learn from")
    options = spec.options(**option_values)
    intervention = spec.from_responses(model, responses, options)
    if options.gate:  # gates from the same responses (non-causal, as the maps here)
        from aura_tl.gating import gates_from_responses

        intervention = gates_from_responses(intervention, responses)
    return intervention


def calibrated(model, intervention: Intervention, options, *, progress: bool = True) -> Intervention:
    """The intervention at the strongest strength (up to the learned one) within the perplexity budget; the
    measurements go into its metadata under `calibration`."""
    from aura_tl.calibrate import calibrate_strength, calibration_text

    text, source = calibration_text(options.calibration_text)
    strength, record = calibrate_strength(model, intervention, options.max_ppl_increase, text, progress=progress)
    record.update(text=source, chosen_strength=strength)
    log.warning("calibrated %s: strength %.4g keeps perplexity within +%g %% (%.3f -> %.3f on %s)",
                intervention.method, strength, options.max_ppl_increase, record["base_ppl"], record["chosen_ppl"],
                source)
    return Intervention(intervention.method, intervention.tensors, intervention.shape,
                        {**intervention.metadata, "calibration": record}, strength)


def data_metadata(data: ConceptData) -> dict:
    """How concept data is recorded in an intervention's metadata."""
    return {"source": data.source, "layout": data.layout, "n": len(data), "counts": data.counts, **data.info}


def base_metadata(options, **extra) -> dict:
    """The metadata every learned intervention carries: package version and the options it was learned with."""
    from aura_tl.options import as_dict

    return {"version": __version__, "options": as_dict(options), **extra}


def hash_texts(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()[:16]

"""aura-tl: remove toxic language from LLMs by intervening on their activations (AurA, Det0, Damp, DeStein,
Linear-AcT, Mean-AcT) in TransformerLens, and measure it in lm-eval."""

from aura_tl._version import __version__
from aura_tl.auroc import auroc
from aura_tl.data import ConceptData, load_concept_data
from aura_tl.hooks import DEFAULT_HOOKS, resolve_hook_names
from aura_tl.intervention import Intervention
from aura_tl.learn import intervention_from_responses, learn_intervention
from aura_tl.methods import get_method, method_names, register_method
from aura_tl.models import DEFAULT_MODEL, load_model
from aura_tl.responses import Responses, collect_responses, responses_from_cache

__all__ = [
    "DEFAULT_HOOKS", "DEFAULT_MODEL", "ConceptData", "Intervention", "Responses", "__version__", "auroc",
    "collect_responses", "get_method", "intervention_from_responses", "learn_intervention", "load_concept_data", "load_model", "method_names",
    "register_method", "resolve_hook_names", "responses_from_cache",
]

"""aura-tl: remove toxic language from LLMs by intervening on their neurons (AurA, Det0, Damp, DeStein) in
TransformerLens, and measure it in lm-eval."""

__version__ = "0.1.0"

from aura_tl.auroc import auroc  # noqa: E402
from aura_tl.data import ConceptData, load_concept_data  # noqa: E402
from aura_tl.hooks import DEFAULT_HOOKS, resolve_hook_names  # noqa: E402
from aura_tl.intervention import Intervention  # noqa: E402
from aura_tl.learn import learn_intervention  # noqa: E402
from aura_tl.models import DEFAULT_MODEL, load_model  # noqa: E402
from aura_tl.responses import Responses, collect_responses  # noqa: E402

__all__ = [
    "DEFAULT_HOOKS", "DEFAULT_MODEL", "ConceptData", "Intervention", "Responses", "auroc", "collect_responses",
    "learn_intervention", "load_concept_data", "load_model", "resolve_hook_names",
]

"""The toy concept data the unit tests learn from: n templated insults and n templated polite sentences."""

from aura_tl.data import ConceptData


def toy_concept(n: int) -> ConceptData:
    """n toxic (1) then n polite (0) sentences that differ only in a number, so a tiny model can tell them apart."""
    toxic = [f"you are a stupid idiot number {i}, shut up" for i in range(n)]
    polite = [f"thank you for the lovely visit number {i}" for i in range(n)]
    return ConceptData(toxic + polite, [1] * n + [0] * n, "test", "text_label")

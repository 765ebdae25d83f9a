import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from aura_tl.data import read_jsonl
from aura_tl.scoring import BiLSTMScorer, _RestrictedUnpickler, get_scorer

REFERENCE = Path(__file__).parent / "fixtures" / "bilstm_reference.json"


@pytest.fixture(scope="module")
def bilstm():
    return BiLSTMScorer()


def test_port_matches_the_tensorflow_original(bilstm):
    """Reference outputs made by the original package under TensorFlow (tests/fixtures/make_bilstm_reference.py)."""
    ref = json.loads(REFERENCE.read_text())
    ours = bilstm.classify([r["text"] for r in ref["rows"]])
    np.testing.assert_allclose(ours, np.array([r["scores"] for r in ref["rows"]]), atol=1e-5)


def test_separates_toxic_and_non_toxic_rtp_prompts(bilstm, shared_data):
    records = read_jsonl(shared_data / "rtp" / "decodingtrust_toxic.jsonl")
    records += read_jsonl(shared_data / "rtp" / "decodingtrust_nontoxic.jsonl")
    records = [r for r in records if r["prompt"].get("toxicity") is not None]
    labels = [int(r["prompt"]["toxicity"] >= 0.5) for r in records]
    scores = bilstm.score([r["prompt"]["text"] for r in records])
    assert roc_auc_score(labels, scores) >= 0.9


def test_unpickler_refuses_other_classes():
    payload = pickle.dumps(Path("/tmp"))
    import io

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _RestrictedUnpickler(io.BytesIO(payload)).load()


def test_scorer_names():
    assert get_scorer("jigsaw-bilstm").name == "jigsaw-bilstm"
    with pytest.raises(ValueError, match="unknown toxicity scorer"):
        get_scorer("perspective")

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from aura_tl.auroc import auroc


def sklearn_columns(scores: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    return np.array([roc_auc_score(labels.numpy(), scores[:, j].numpy()) for j in range(scores.shape[1])])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("chunk_size", [None, 1, 7, 1000])
def test_matches_sklearn_with_ties(chunk_size, backend):
    g = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 4, (257, 40), generator=g).float()  # heavy ties
    scores[:, :10] = torch.randn(257, 10, generator=g)  # no ties
    scores[:, 10] = 3.0  # one constant column: AUROC 0.5
    labels = torch.randint(0, 2, (257,), generator=g)
    ours = auroc(scores, labels, chunk_size=chunk_size, backend=backend).numpy()
    np.testing.assert_allclose(ours, sklearn_columns(scores, labels), atol=1e-9)
    assert ours[10] == 0.5


def test_threads_and_1d_and_float64():
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(100, 300, generator=g, dtype=torch.float64).round(decimals=1)
    labels = torch.randint(0, 2, (100,), generator=g)
    multi = auroc(scores, labels, chunk_size=13, workers=2)
    np.testing.assert_allclose(multi.numpy(), sklearn_columns(scores, labels), atol=1e-9)
    assert auroc(scores[:, 0], labels).item() == pytest.approx(multi[0].item())


def test_perfect_separation_and_direction():
    labels = torch.tensor([0, 0, 1, 1])
    scores = torch.tensor([[0.1, 0.9], [0.2, 0.8], [0.3, 0.2], [0.4, 0.1]])
    assert auroc(scores, labels).tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    "scores,labels,message",
    [
        (torch.zeros(0, 3), torch.zeros(0), "empty"),
        (torch.zeros(4, 3), torch.ones(4), "both classes"),
        (torch.zeros(4, 3), torch.tensor([0, 1, 2, 1]), "0 .negative. or 1"),
        (torch.tensor([[float("nan")], [1.0]]), torch.tensor([0, 1]), "NaN"),
        (torch.zeros(4, 3), torch.tensor([0, 1]), "2 labels for 4 rows"),
    ],
)
def test_bad_input_is_a_clear_error(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        auroc(scores, labels)

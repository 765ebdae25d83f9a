"""Toxicity scorers, pluggable by name: `score(texts) -> [0, 1] per text`, batched and cached per process.

- `jigsaw-bilstm` (offline, from PyPI): the Jigsaw-trained BiLSTM of `toxic-comment-classifier==0.3.0` (MIT),
  ported to plain torch. Its Keras weights are read from the package's `.h5` with h5py and its tokenizer's word
  index from the pickle through an unpickler that only admits the three plain classes it holds; TensorFlow is never
  imported. Score = the `toxic` head's probability.
- `detoxify-original`, `detoxify-unbiased`, `detoxify-multilingual` (the paper's scorer): Detoxify's checkpoints,
  downloaded by detoxify when online; `detoxify-original:/path/to/checkpoint.ckpt` loads a local checkpoint.
  Score = the `toxicity` head.
- `auto`: Detoxify `original` when it loads, else `jigsaw-bilstm` (the name used is logged and stored).
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import pickle
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)
JIGSAW_LABELS = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
BILSTM_MAXLEN = 100


class _KerasTokenizerState:
    """Stands in for keras' Tokenizer while unpickling: it only receives the pickled attribute dict."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a Keras Tokenizer's state without importing keras or running any other class."""

    ALLOWED = {
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("builtins", "int"),
        ("builtins", "dict"),
        ("builtins", "list"),
    }

    def find_class(self, module: str, name: str):
        if name == "Tokenizer" and module.startswith("keras"):
            return _KerasTokenizerState
        if (module, name) in self.ALLOWED:
            import builtins
            import collections

            return getattr(collections if module == "collections" else builtins, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _package_dir(module: str, hint: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the scorer needs the package '{module}': {hint}")
    return Path(next(iter(spec.submodule_search_locations)))


class KerasWordTokenizer:
    """Keras' `Tokenizer.texts_to_sequences` + `pad_sequences(maxlen)` (pre-padding, pre-truncation) in Python."""

    def __init__(self, state: dict, maxlen: int = BILSTM_MAXLEN) -> None:
        self.word_index: dict[str, int] = dict(state["word_index"])
        self.num_words = state.get("num_words")
        self.oov_index = self.word_index.get(state["oov_token"]) if state.get("oov_token") else None
        self.lower = state.get("lower", True)
        self.split = state.get("split", " ")
        self.table = str.maketrans({c: self.split for c in state.get("filters", "")})
        self.maxlen = maxlen

    def words(self, text: str) -> list[str]:
        if self.lower:
            text = text.lower()
        return [w for w in text.translate(self.table).split(self.split) if w]

    def ids(self, text: str) -> list[int]:
        out = []
        for word in self.words(text):
            index = self.word_index.get(word)
            if index is not None and not (self.num_words and index >= self.num_words):
                out.append(index)
            elif self.oov_index is not None:
                out.append(self.oov_index)
        return out

    def batch(self, texts: Sequence[str]) -> torch.Tensor:
        rows = np.zeros((len(texts), self.maxlen), dtype=np.int64)
        for i, text in enumerate(texts):
            ids = self.ids(text)[-self.maxlen:]
            if ids:
                rows[i, -len(ids):] = ids
        return torch.from_numpy(rows)


class JigsawBiLSTM(nn.Module):
    """Embedding(20000, 50) -> BiLSTM(50) -> max over time -> Dense(50, relu) -> Dense(6, sigmoid)."""

    def __init__(self, vocab: int = 20000, dim: int = 50, units: int = 50, labels: int = 6) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, units, batch_first=True, bidirectional=True)
        self.hidden = nn.Linear(2 * units, 50)
        self.out = nn.Linear(50, labels)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        states, _ = self.lstm(self.embedding(ids))
        return torch.sigmoid(self.out(torch.relu(self.hidden(states.amax(dim=1)))))

    def load_keras_h5(self, path: Path) -> "JigsawBiLSTM":
        """Keras 3 weight layout; LSTM gates are (i, f, c, o) in both frameworks, so only transposes are needed."""
        import h5py

        with h5py.File(path, "r") as f:
            get = lambda key: torch.from_numpy(np.asarray(f[key]))  # noqa: E731
            state = {"embedding.weight": get("layers/embedding/vars/0")}
            for keras_dir, suffix in (("forward_layer", ""), ("backward_layer", "_reverse")):
                base = f"layers/bidirectional/{keras_dir}/cell/vars"
                state[f"lstm.weight_ih_l0{suffix}"] = get(f"{base}/0").T
                state[f"lstm.weight_hh_l0{suffix}"] = get(f"{base}/1").T
                state[f"lstm.bias_ih_l0{suffix}"] = get(f"{base}/2")
                state[f"lstm.bias_hh_l0{suffix}"] = torch.zeros_like(get(f"{base}/2"))
            state.update({"hidden.weight": get("layers/dense/vars/0").T, "hidden.bias": get("layers/dense/vars/1"),
                          "out.weight": get("layers/dense_1/vars/0").T, "out.bias": get("layers/dense_1/vars/1")})
        self.load_state_dict({k: v.float().contiguous() for k, v in state.items()})
        return self.eval()


class BiLSTMScorer:
    """The offline scorer: `toxic-comment-classifier==0.3.0`'s files, read without TensorFlow."""

    name = "jigsaw-bilstm"
    HINT = "pip install --no-deps toxic-comment-classifier==0.3.0"

    def __init__(self, batch_size: int = 256) -> None:
        folder = _package_dir("toxic_classifier", self.HINT) / "model"
        with open(folder / "tokenizer.pickle", "rb") as handle:
            state = _RestrictedUnpickler(io.BytesIO(handle.read())).load().__dict__
        self.tokenizer = KerasWordTokenizer(state)
        self.model = JigsawBiLSTM().load_keras_h5(folder / "model.weights.h5")
        self.batch_size = batch_size

    @torch.inference_mode()
    def classify(self, texts: Sequence[str]) -> np.ndarray:
        """[n, 6] probabilities in JIGSAW_LABELS order (what the original's `classify` returns)."""
        parts = [self.model(self.tokenizer.batch(texts[i:i + self.batch_size])).numpy()
                 for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, 6), dtype=np.float32)

    def score(self, texts: Sequence[str]) -> list[float]:
        return self.classify(list(texts))[:, 0].astype(float).tolist()


class DetoxifyScorer:
    """Detoxify (`pip install detoxify`); a checkpoint path after ':' loads offline."""

    def __init__(self, variant: str = "original", checkpoint: str | None = None, batch_size: int = 64) -> None:
        from detoxify import Detoxify

        self.name = f"detoxify-{variant}"
        self.model = Detoxify(variant, checkpoint=checkpoint, device="cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size

    def score(self, texts: Sequence[str]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            result = self.model.predict(list(texts[i:i + self.batch_size]))
            out += [float(x) for x in result["toxicity"]]
        return out


SCORERS = ("auto", "jigsaw-bilstm", "detoxify-original", "detoxify-unbiased", "detoxify-multilingual")


def check_scorer_name(name: str) -> str:
    """`name` if it names a scorer (`detoxify-*` may carry `:checkpoint`), else a ValueError listing them."""
    base = name.partition(":")[0]
    if base not in SCORERS:
        raise ValueError(f"unknown toxicity scorer '{name}'; choose from {', '.join(SCORERS)}")
    return name


@lru_cache(maxsize=4)
def get_scorer(name: str | None = None):
    """A cached scorer by name (default: `$AURA_TL_SCORER`, else `auto`)."""
    name = check_scorer_name(name or os.environ.get("AURA_TL_SCORER") or "auto")
    base, _, checkpoint = name.partition(":")
    if base == "jigsaw-bilstm":
        return BiLSTMScorer()
    if base.startswith("detoxify-"):
        return DetoxifyScorer(base.removeprefix("detoxify-"), checkpoint or None)
    if base == "auto":
        try:
            return DetoxifyScorer("original")
        except Exception as error:  # not installed, or its checkpoint cannot be downloaded here
            log.warning("Detoxify unavailable (%s); scoring toxicity with the offline jigsaw-bilstm",
                        re.sub(r"\s+", " ", str(error))[:120])
            return BiLSTMScorer()
    raise AssertionError(base)  # check_scorer_name knows every name

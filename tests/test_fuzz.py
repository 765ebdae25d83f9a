"""Property tests with a fixed seed: random bytes, random shapes, wrong dtypes and NaN fed to `Intervention.load`
(and on to a model), and random values fed to every option parser, end in a clear `ValueError` /
`FileNotFoundError` or in a sound result, never in another exception or a silent NaN."""

from __future__ import annotations

import json
import math
import random

import pytest
from conftest import PROBE_GATED
import torch
from safetensors.torch import save_file

from aura_tl.intervention import Intervention
from aura_tl.io import load_safetensors
from aura_tl.learn import learn_intervention
from aura_tl.methods import get_method, method_names, option_specs
from aura_tl.data import ConceptData

CLEAR = (ValueError, FileNotFoundError)
TOKENS = torch.tensor([[5, 17, 300, 4000, 12]])


@pytest.fixture(scope="module")
def good_file(tiny, tmp_path_factory):
    data = ConceptData([f"you stupid idiot {i}" for i in range(8)] + [f"thanks, lovely day {i}" for i in range(8)],
                       [1] * 8 + [0] * 8, "test", "text_label")
    iv = learn_intervention(tiny, data, "linact", hooks="hook_attn_out", **PROBE_GATED, progress=False)
    return iv.save(tmp_path_factory.mktemp("fuzz") / "good.safetensors")


def mutate(rng: random.Random, tensor: torch.Tensor) -> torch.Tensor:
    kind = rng.choice(["nan", "inf", "reshape", "grow", "shrink", "int", "half", "scalar", "empty"])
    if kind == "nan":
        return tensor.clone().index_fill_(0, torch.tensor([rng.randrange(tensor.numel())]), float("nan")) \
            if tensor.ndim == 1 else tensor * float("nan")
    if kind == "inf":
        return tensor * float("inf")
    if kind == "reshape" and tensor.numel() % 2 == 0:
        return tensor.reshape(2, -1)
    if kind == "grow":
        return torch.cat([tensor.flatten(), tensor.flatten()[:1]])
    if kind == "shrink":
        return tensor.flatten()[:-1]
    if kind == "int":
        return tensor.to(torch.int32)
    if kind == "half":
        return tensor.half()
    if kind == "scalar":
        return tensor.flatten()[0]
    return tensor.flatten()[:0]


def test_random_files_are_refused_clearly_or_run_soundly(tiny, good_file, tmp_path):
    rng = random.Random(0)
    tensors, meta = load_safetensors(good_file)
    refused = ran = 0
    for trial in range(60):
        path = tmp_path / f"case{trial}.safetensors"
        if trial % 6 == 0:  # random bytes, sometimes behind a valid-looking header
            blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600)))
            path.write_bytes(good_file.read_bytes()[:rng.randrange(8, 120)] + blob if trial % 12 else blob)
        else:
            changed = dict(tensors)
            for key in rng.sample(sorted(changed), rng.randrange(1, 4)):
                changed[key] = mutate(rng, changed[key])
            if trial % 5 == 0:
                changed.pop(rng.choice(sorted(changed)))
            metadata = dict(meta)
            if trial % 7 == 0:
                metadata["metadata"] = rng.choice(["{", "[]", json.dumps({"gate": {"rule": "nope"}}), "null"])
            if trial % 11 == 0:
                metadata["strength"] = rng.choice(["nan", "-1", "1e9", "abc"])
            save_file({k: v.contiguous() for k, v in changed.items()}, str(path), metadata=metadata)
        try:
            iv = Intervention.load(path)
            iv.check_compatible(tiny)
            with torch.inference_mode(), iv.applied(tiny):
                logits = tiny(TOKENS)
        except CLEAR:
            refused += 1
            continue
        assert torch.isfinite(logits).all(), f"case {trial} ran and gave non-finite logits"
        ran += 1
    assert refused > 40, (refused, ran)  # most mutations damage the file: the check can fail


def test_random_option_values_parse_or_are_refused_clearly():
    rng = random.Random(1)
    specs = option_specs()
    pool = ["nan", "inf", "-inf", "1e999", "-1", "0", "0.5", "2", "7", "", "none", "true", "banana", "1,2", " 3 ",
            float("nan"), float("inf"), -0.0, 10 ** 9, True, None, "\x00", "🙂"]
    parsed = 0
    for name in method_names():
        own = get_method(name).option_names()
        for option in own:
            for value in rng.sample(pool, 8):
                try:
                    options = get_method(name).options(**{option: value})
                except CLEAR:
                    continue
                parsed += 1
                got = getattr(options, option)
                if specs[option].type is float and got is not None:
                    assert math.isfinite(got), (name, option, value, got)
    assert parsed > 20

"""Guarantees that must not regress: no unrestricted unpickling, and the same seed gives the same intervention."""

import re
from pathlib import Path

import torch

from aura_tl.data import ConceptData
from aura_tl.learn import learn_intervention

PACKAGE_DIRS = [Path(__file__).resolve().parent.parent / d for d in ("aura_tl", "lm_eval_plugin", "tasks")]


def test_no_unrestricted_unpickling_in_the_package():
    offenders = []
    for folder in PACKAGE_DIRS:
        for path in folder.rglob("*.py"):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                code = line.split("#", 1)[0]
                if re.search(r"torch\.load\(", code) and "weights_only=True" not in code:
                    offenders.append(f"{path.name}:{number}: {line.strip()}")
                if re.search(r"pickle\.loads?\(|Unpickler\(", code) and "_RestrictedUnpickler" not in code:
                    offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert offenders == []


def test_same_seed_same_intervention(tiny):
    data = ConceptData([f"you stupid idiot {i}" for i in range(10)] + [f"thank you kindly {i}" for i in range(10)],
                       [1] * 10 + [0] * 10, "test", "text_label")
    quick = {"aura": {}, "linact": {"gate": "probe", "calibration_panel": "text"}}  # the default whole: test_battery
    for method, hooks in (("aura", "hook_post"), ("linact", "hook_attn_out")):
        a = learn_intervention(tiny, data, method, hooks=hooks, progress=False, **quick[method])
        b = learn_intervention(tiny, data, method, hooks=hooks, progress=False, **quick[method])
        for hook in a.tensors:
            for name in a.tensors[hook]:
                assert torch.equal(a.tensors[hook][name], b.tensors[hook][name])
        strip = lambda meta: {k: strip(v) if isinstance(v, dict) else v  # noqa: E731
                              for k, v in meta.items() if k != "seconds"}  # timings, also the gate's
        assert strip(a.metadata) == strip(b.metadata)


def test_atomic_files_get_ordinary_permissions(tmp_path):
    """Files written through a temporary file are readable like any other (mkstemp alone makes them 0600)."""
    import os

    import torch

    from aura_tl.io import atomic_save_safetensors

    mask = os.umask(0o022)
    try:
        path = atomic_save_safetensors({"x": torch.zeros(2)}, tmp_path / "x.safetensors", {})
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644

"""On-policy concept data: the model's own continuations of RTP prompts (the `learn` split by default), scored by a
toxicity scorer and labelled toxic (score >= 0.5) or not. These are the activations an intervention has to
suppress, in the model's own distribution, rather than someone else's tweets.

The result is a `text,label` JSONL (also `score`, `prompt`), written atomically, that `--data` reads; building it
again with the same model, prompts and settings reuses the file (its settings are stored in a sidecar key).

`data=onpolicy-pairs:N` builds (or reuses, in the cache dir) N continuations of each `learn` prompt and learns from
prompt-matched pairs (`matched_pairs`): each toxic continuation beside a non-toxic one of the same prompt, both as
prompt + continuation, so what separates the classes is the continuation (learn with `pooling=mean_last:16`;
docs/results/past-lambda-4.md, section 3).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import tempfile
from collections import defaultdict
from pathlib import Path

from aura_tl.data import ConceptData, read_jsonl, prompt_records
from aura_tl.generation import SamplingConfig, generate
from aura_tl.io import default_mode
from aura_tl.models import cache_dir, model_fingerprint
from aura_tl.scoring import get_scorer
from aura_tl.splits import TOXIC, prompt_text

log = logging.getLogger(__name__)
SOURCE = re.compile(r"onpolicy:([1-9]\d*)")  # `onpolicy:N`: N continuations of each learn prompt, built and cached
PAIRS = re.compile(r"onpolicy-pairs:([1-9]\d*)")  # `data=onpolicy-pairs:N`: the same, as prompt-matched pairs


def build_onpolicy_data(model, path: str | Path, *, split: str = "learn", samples: int = 5, max_new_tokens: int = 20,
                        scorer: str | None = None, seed: int = 0, batch_size: int = 50, progress: bool = True) -> Path:
    """Write (or reuse) `path`: `samples` sampled continuations (top-p 0.9, T = 1) of each prompt of the RTP
    `split`, each a row {text, label, score, prompt}."""
    path = Path(path)
    # the weights' fingerprint, not only the name: a fine-tuned copy in a folder of the same name is another model
    settings = {"model": str(model.cfg.model_name), "weights": model_fingerprint(model), "split": split,
                "samples": samples, "max_new_tokens": max_new_tokens,
                "scorer": scorer or os.environ.get("AURA_TL_SCORER", "auto"), "seed": seed}
    if path.is_file():
        rows = read_jsonl(path)
        if rows and rows[0].get("settings") == settings:
            log.warning("reusing on-policy data at %s", path)
            return path
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    prompts = [prompt_text(r) for r in prompt_records(split)]
    repeated = [p for p in prompts for _ in range(samples)]
    config = SamplingConfig(max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0, top_p=0.9, seed=seed)
    texts = generate(model, repeated, config, batch_size=batch_size, progress=progress, desc="on-policy continuations")
    keep = [i for i, t in enumerate(texts) if t.strip()]
    scores = get_scorer(settings["scorer"]).score([texts[i].strip() for i in keep])
    rows = [{"text": texts[i].strip(), "label": int(s >= TOXIC), "score": round(float(s), 6), "prompt": repeated[i]}
            for i, s in zip(keep, scores)]
    rows[0]["settings"] = settings
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    default_mode(tmp)
    os.replace(tmp, path)
    toxic = sum(r["label"] for r in rows)
    log.warning("on-policy data: %d continuations of %d %s prompts, %d toxic -> %s", len(rows), len(prompts), split,
                toxic, path)
    return path


def joined(prompt: str, continuation: str) -> str:
    """A prompt and its stored (stripped) continuation as the model read them: one space between."""
    return prompt + " " + continuation.lstrip()


def check_source(source: str, name: str = "on-policy source") -> None:
    """A ValueError naming `name` unless `source` is `onpolicy:N` (N >= 1) or an existing file: checked when an
    option is set, before anything is generated."""
    if not SOURCE.fullmatch(str(source)) and not Path(source).expanduser().is_file():
        raise ValueError(f"{name} must be onpolicy:N (N >= 1) or an `aura-tl onpolicy` file, got {source!r}")


def read_onpolicy(path: str | Path) -> list[dict]:
    """The rows of an `aura-tl onpolicy` file ({prompt, text, label, ...}); a ValueError for any other file."""
    rows = read_jsonl(path)
    if rows and not {"prompt", "text", "label"} <= set(rows[0]):
        raise ValueError(f"{path}: not an `aura-tl onpolicy` file (rows need prompt, text and label)")
    return rows


def cached_onpolicy(model, samples: int, *, progress: bool = True) -> Path:
    """The model's `samples` continuations of each `learn` prompt, built once into the cache dir and reused."""
    name = re.sub(r"[^\w.-]+", "_", str(model.cfg.model_name))
    return build_onpolicy_data(model, cache_dir() / "onpolicy" / f"{name}-learn-{samples}.jsonl", samples=samples,
                               progress=progress)


def source_rows(model, source: str, *, progress: bool = True) -> list[dict]:
    """The rows of on-policy `source`: `onpolicy:N` builds (or reuses, in the cache dir) the model's N
    continuations of each `learn` prompt; a path reads an `aura-tl onpolicy` file."""
    counted = SOURCE.fullmatch(str(source))
    if counted:
        return read_onpolicy(cached_onpolicy(model, int(counted[1]), progress=progress))
    check_source(source)
    return read_onpolicy(Path(source).expanduser())


def toxic_pairs(rows: list[dict]) -> list[tuple[str, str]]:
    """The (prompt, continuation) pairs labelled toxic among on-policy `rows` (`source_rows`)."""
    return [(r["prompt"], r["text"]) for r in rows if int(r["label"]) == 1]


def clean_pairs(rows: list[dict]) -> list[tuple[str, str]]:
    """The (prompt, continuation) pairs labelled non-toxic among on-policy `rows` whose prompt has a toxic one too:
    where the model, on the very prompts that lead it to toxic text, stayed clean (and, mostly, on subject)."""
    leading = {r["prompt"] for r in rows if int(r["label"]) == 1}
    return [(r["prompt"], r["text"]) for r in rows if int(r["label"]) == 0 and r["prompt"] in leading]


def matched_pairs(rows: list[dict], seed: int = 0) -> list[dict]:
    """{text, label} rows: every toxic continuation, then a non-toxic one of the same prompt (unused ones first;
    else one of a prompt with no toxic continuation), in the file's prompt order."""
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["text"].strip():
            by_prompt[row["prompt"]].append(row)
    rng = random.Random(seed)
    spare = [r for rs in by_prompt.values() if not any(int(x["label"]) for x in rs) for r in rs]
    rng.shuffle(spare)
    out = []
    for prompt, group in by_prompt.items():
        toxic = [r for r in group if int(r["label"]) == 1]
        clean = [r for r in group if int(r["label"]) == 0]
        rng.shuffle(clean)
        for i, row in enumerate(toxic):
            if i >= len(clean) and not spare:
                raise ValueError("too few non-toxic continuations to match every toxic one")
            other = clean[i] if i < len(clean) else spare.pop()
            out += [{"text": joined(prompt, row["text"]), "label": 1},
                    {"text": joined(other["prompt"], other["text"]), "label": 0}]
    return out


def pairs_data(model, source: str, *, seed: int = 0, progress: bool = True) -> ConceptData:
    """Concept data for `data=onpolicy-pairs:N`: the matched pairs of the model's cached on-policy continuations."""
    counted = PAIRS.fullmatch(str(source))
    if not counted:
        raise ValueError(f"not an on-policy pairs source (onpolicy-pairs:N): {source!r}")
    path = cached_onpolicy(model, int(counted[1]), progress=progress)
    rows = matched_pairs(read_onpolicy(path), seed)
    if not rows:
        raise ValueError(f"{path}: no continuation was scored toxic, so there are no pairs to learn from")
    return ConceptData([r["text"] for r in rows], [r["label"] for r in rows], str(source), "onpolicy-pairs",
                       {"file": str(path), "pairs": len(rows) // 2})

"""Where a report's runs live and how to read them: configuration names, task folders, lm-eval's result and
`--log_samples` files, and each run paired against unsteered (`add_paired`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bench.results.paired import PAIRED_KEYS, PAIRED_RETENTION, bootstrap_ci, paired_reduction

RTP_TASKS = ("rtp_toxicity_25", "rtp_toxicity_5", "rtp_toxicity")
RETENTION_TASKS = ("piqa_local", "hellaswag_local", "wikitext_local")
PPL = "wikitext_local/word_perplexity"
PROMPT_KEPT = "np"  # `NAME[@x]:np`: NAME applied with steer_prompt=false (aura_tl.prompt_scope)


class ConfigName(NamedTuple):
    """A configuration's name, `LEARNED[@STRENGTH][:np][+PREPROMPT]`, in its parts (one parser for every reader)."""

    learned: str  # a --learn NAME, a --stack NAME or `unsteered`
    strength: float  # lambda (1 when not written)
    preprompt: str | None  # the pre-prompt its RTP prompts carry
    model: str  # the name without the pre-prompt: the configuration whose model it runs
    prompt_kept: bool = False  # `:np`: the prompt left unsteered (steer_prompt=false)


def split_prompt_kept(text: str) -> tuple[str, bool]:
    """`X:np` -> (X, True), `X` -> (X, False); a ValueError for any other suffix."""
    head, colon, scope = text.partition(":")
    if colon and scope != PROMPT_KEPT:
        raise ValueError(f"the only suffix is :{PROMPT_KEPT} (the prompt left unsteered), not :{scope}")
    return head, bool(colon)


def parse_config(name: str) -> ConfigName:
    """The parts of a name; a ValueError for a lambda that is not a number or a suffix other than `:np`."""
    model, _, preprompt = name.partition("+")
    configured, prompt_kept = split_prompt_kept(model)
    learned, _, strength = configured.partition("@")
    try:
        value = float(strength) if strength else 1.0
    except ValueError:
        raise ValueError(f"{strength!r} is not a lambda") from None
    return ConfigName(learned, value, preprompt or None, model, prompt_kept)


def base_name(config: str) -> str:
    """The curve a configuration is drawn on: `act@0.5` -> `act`, `act@0.5+nontoxic` -> `act+nontoxic`,
    `act@6:np` -> `act:np`."""
    parsed = parse_config(config)
    return (parsed.learned + (f":{PROMPT_KEPT}" if parsed.prompt_kept else "")
            + (f"+{parsed.preprompt}" if parsed.preprompt else ""))


def task_dir_of(out: Path, name: str, task: str) -> Path:
    """Where a configuration's run of one task lives. A pre-prompt only changes the RTP prompts, so `NAME+PREPROMPT`
    shares NAME's runs of the retention tasks (same model, same requests) instead of repeating them."""
    return out / "runs" / (name if task in RTP_TASKS else parse_config(name).model) / task


def finished(task_dir: Path) -> bool:
    return any(task_dir.rglob("results_*.json"))


def task_samples(run_dir: Path, task: str) -> dict[int, dict]:
    """doc_id -> that document's metrics, from lm-eval's `--log_samples` file of `task` (a glob) under `run_dir`."""
    samples = next((f for f in run_dir.rglob(f"samples_{task}_*.jsonl")), None)
    if samples is None:
        return {}
    lines = samples.read_text(encoding="utf-8").split("\n")  # not splitlines(): texts hold U+2028 and the like
    return {r["doc_id"]: r for r in map(json.loads, filter(str.strip, lines))}


def rtp_samples(run_dir: Path) -> dict[int, dict]:
    """doc_id -> that prompt's metrics, from lm-eval's `--log_samples` file of the RTP task."""
    return task_samples(run_dir, "rtp_toxicity*")


def required_rtp_samples(run_dir: Path) -> dict[int, dict]:
    """`rtp_samples`, where a missing log is an error naming the run."""
    found = rtp_samples(run_dir)
    if not found:
        raise SystemExit(f"no RTP sample log under {run_dir} (run the report with --log_samples, as it does)")
    return found


def continuations(record: dict) -> list[str]:
    """The sampled continuations of one RTP sample record."""
    resps = record["filtered_resps"]
    return resps[0] if resps and isinstance(resps[0], list) else resps


def collect(out: Path, name: str, tasks: list[str]) -> dict:
    """One configuration's metrics (`task/metric`) from its finished runs, with the RTP bootstrap interval."""
    row: dict = {}
    for results_file in (f for task in tasks for f in task_dir_of(out, name, task).rglob("results_*.json")):
        data = json.loads(results_file.read_text())
        for task, metrics in data["results"].items():
            for key, value in metrics.items():
                if "," in key and "stderr" not in key:  # "metric,filter": the filter is `none` or `all`
                    row[f"{task}/{key.split(',')[0]}"] = value
    samples = rtp_samples(out / "runs" / name)
    if samples:
        probs = np.array([r["toxicity_prob"] for r in samples.values()])
        row["rtp/n_prompts"] = len(probs)
        row["rtp/toxicity_prob_ci"] = bootstrap_ci(probs)
    return row


def add_paired(rows: dict[str, dict], runs: Path, against: str = "unsteered") -> None:
    """Each configuration against `against` (unsteered) on the same prompts: `paired/<metric>` = reduction factor
    and difference; `paired/<task>/<metric>` = the accuracy change on the documents both runs answered."""
    base = rtp_samples(runs / against)
    for name, row in rows.items():
        other = rtp_samples(runs / name) if base else {}
        if name != against and other:
            for key in PAIRED_KEYS:
                row[f"paired/{key}"] = paired_reduction(base, other, key)
    for task, (metric, _) in PAIRED_RETENTION.items():
        base = task_samples(runs / against, task)
        for name, row in rows.items():
            other = task_samples(runs / name, task) if base and name != against else {}
            if other:
                row[f"paired/{task}/{metric}"] = paired_reduction(base, other, metric)

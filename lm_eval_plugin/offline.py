"""Fail fast, before any model loads, when a selected lm-eval task reads a Hugging Face Hub dataset that can be
neither reached nor found in the local datasets cache; the message names the offline twin (`piqa` ->
`piqa_local`) where this project ships one. Without it lm-eval loads the model (and learns the default
intervention), retries the Hub for half a minute and ends in a `ConnectionError` traceback.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

LOCAL_BUILDERS = {"json", "csv", "text", "parquet", "arrow", "pandas"}
HUB_HOST = ("huggingface.co", 443)


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """False when an offline flag is set or the Hub's host cannot be reached within `timeout` seconds."""
    if any(os.environ.get(flag, "").lower() in ("1", "true", "yes") for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return False
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def in_datasets_cache(dataset_path: str) -> bool:
    """Whether `datasets` has this Hub dataset cached (its `owner___name` folder)."""
    from datasets import config

    return (Path(config.HF_DATASETS_CACHE) / dataset_path.replace("/", "___")).is_dir()


def unreachable_tasks(task_names, task_manager) -> list[tuple[str, str, str | None]]:
    """(task, Hub dataset, local twin or None) for each selected task whose data cannot be had offline."""
    missing = []
    for name in task_names:
        entry = task_manager.task_index.get(name) if isinstance(name, str) else None
        path = (getattr(entry, "cfg", None) or {}).get("dataset_path") if entry else None
        if not path or path in LOCAL_BUILDERS or Path(path).expanduser().exists() or in_datasets_cache(path):
            continue
        if not hub_reachable():
            twin = f"{name}_local" if f"{name}_local" in task_manager.task_index else None
            missing.append((name, path, twin))
    return missing


def offline_message(missing) -> str:
    lines = ["aura-tl: the Hugging Face Hub cannot be reached and these tasks' datasets are not cached:"]
    for task, path, twin in missing:
        lines.append(f"  {task} reads {path}" + (f": use --tasks {twin} (the same task on local files)" if twin else ""))
    lines.append("(or connect to the Hub once so that `datasets` caches them)")
    return "\n".join(lines)


def check_selected_tasks(config, task_manager) -> None:
    """Called right after lm-eval's CLI selects its tasks: exit with the message when any cannot be had."""
    missing = unreachable_tasks(list(config.tasks or []), task_manager)
    if missing:
        raise SystemExit(offline_message(missing))

"""Atomic `.safetensors` writing and checked reading (a crash never leaves a half-written file behind), and the
text hash that keys saved responses and cached interventions."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)


def default_mode(path: str | Path) -> None:
    """Give a `mkstemp` file (created 0600) the permissions a plain `open` would: 0666 minus the umask."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> Path:
    """Write to a temporary file beside `path`, then rename over it (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        default_mode(tmp)
        if path.exists():  # another run (or an earlier one) wrote it: the last rename wins, and says so
            log.warning("replaced the existing file at %s", path)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def check_writable(path: str | Path) -> Path:
    """Fail before any long work when `path` cannot be written: a directory, or a folder that is not writable.
    A missing folder is fine (it is created on save)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output {path} is a directory: give a file name, e.g. {path / 'intervention.safetensors'}")
    folder = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
    if not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write {path}: {folder} is not writable (read-only?); choose another -o path")
    return path


def load_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a `.safetensors` file, with a clear error for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable .safetensors file ({error})") from error


def hash_texts(texts: Iterable[str]) -> str:
    """A short sha256 of texts in order (each NUL-terminated, so no two lists collide by concatenation)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()[:16]

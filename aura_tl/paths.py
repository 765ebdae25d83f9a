"""Where local data files are found: an explicit path, an environment variable, or the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    """`$AURA_SHARED_DATA`, else `../shared/data` beside the working directory or beside this checkout."""
    candidates = [os.environ.get("AURA_SHARED_DATA"), Path.cwd().parent / "shared" / "data",
                  REPO_ROOT.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def local_data_path(explicit: str | Path | None, env: str, shared_relative: str, name: str = "path") -> Path | None:
    """The first that exists of: `explicit`, `$env`, `<shared data>/<shared_relative>`; None when none does.
    An `explicit` path or `$env` that does not exist is an error naming it (`name` is what the caller calls it)."""
    for candidate, given_as in ((explicit, name), (os.environ.get(env), env)):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.exists():
                raise FileNotFoundError(f"{given_as} {path} does not exist")
            return path
    shared = shared_data_dir()
    if shared and (shared / shared_relative).exists():
        return shared / shared_relative
    return None

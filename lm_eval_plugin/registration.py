"""Where this project's lm-eval tasks live, for `--include_path`, the start-up hook and entry-point discovery."""

from pathlib import Path


def tasks_dir() -> Path:
    """The `tasks/` folder: inside the installed package (wheel), or beside it in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "tasks", here.parent / "tasks"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"aura-tl's tasks folder is missing (looked in {here} and {here.parent})")


TASKS_DIR = tasks_dir()

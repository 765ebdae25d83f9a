"""Start-up hook (run by `aura_tl_lm_eval.pth`): teach lm-eval 0.4.13 about `aura-hooked` and this project's tasks.

lm-eval 0.4.13 finds models only in its own source tree and tasks only there or in `--include_path`. This module
puts a tiny finder on `sys.meta_path` that does nothing until lm-eval's own modules are imported; then it
registers the model as a lazy `module:Class` placeholder, adds the tasks folder to every `TaskManager`, and makes
the CLI fail fast, naming `piqa_local` / `hellaswag_local`, when a selected Hub dataset cannot be had offline.
It imports nothing at start-up beyond `sys`, so unrelated programs pay microseconds.
"""

import sys

MODEL_NAME = "aura-hooked"
MODEL_TARGET = "lm_eval_plugin.model:AuraHookedLM"


def register_model() -> None:
    """Add `aura-hooked` to lm-eval's model registry (lazily: the model module loads on first use)."""
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=MODEL_TARGET)


def register_tasks() -> None:
    """Make every `TaskManager` also index this project's tasks folder (before the user's `--include_path`)."""
    from lm_eval.tasks.manager import TaskManager

    if getattr(TaskManager.__init__, "_aura_tl", False):
        return
    original = TaskManager.__init__

    def __init__(self, *args, include_path=None, **kwargs):
        from lm_eval_plugin.registration import TASKS_DIR

        paths = [] if include_path is None else list(include_path) if isinstance(include_path, (list, tuple)) \
            else [include_path]
        if not any(str(p) == str(TASKS_DIR) for p in paths):
            paths.insert(0, str(TASKS_DIR))  # user paths come later and so win on a name clash
        original(self, *args, include_path=paths, **kwargs)

    __init__._aura_tl = True
    __init__.__wrapped__ = original
    TaskManager.__init__ = __init__


def check_tasks_offline() -> None:
    """After lm-eval's CLI selects tasks (and before it loads a model), fail fast on Hub datasets that cannot be had."""
    from lm_eval.config.evaluate_config import EvaluatorConfig

    if getattr(EvaluatorConfig.process_tasks, "_aura_tl", False):
        return
    original = EvaluatorConfig.process_tasks

    def process_tasks(self, *args, **kwargs):
        from lm_eval_plugin.preflight import check_selected_tasks

        task_manager = original(self, *args, **kwargs)
        check_selected_tasks(self, task_manager)
        return task_manager

    process_tasks._aura_tl = True
    process_tasks.__wrapped__ = original
    EvaluatorConfig.process_tasks = process_tasks


AFTER_IMPORT = {"lm_eval.models": register_model, "lm_eval.tasks.manager": register_tasks,
                "lm_eval.config.evaluate_config": check_tasks_offline}


class _RunAfter:
    """Wraps a module's loader so that a callback runs right after the module has executed."""

    def __init__(self, loader, callback):
        self.loader, self.callback = loader, callback

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        try:
            self.callback()
        except Exception as error:  # never break lm-eval itself because of this plugin
            print(f"aura-tl: could not register with lm-eval: {error!r}", file=sys.stderr)

    def __getattr__(self, name):
        return getattr(self.loader, name)


class LmEvalImportWatcher:
    """A `sys.meta_path` finder that only reacts to the modules in `AFTER_IMPORT`."""

    def find_spec(self, fullname, path=None, target=None):
        callback = AFTER_IMPORT.get(fullname)
        if callback is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RunAfter(spec.loader, callback)
                return spec
        return None


def install() -> None:
    if any(isinstance(f, LmEvalImportWatcher) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, LmEvalImportWatcher())
    for name, callback in AFTER_IMPORT.items():  # lm-eval already imported (e.g. installed mid-session)
        if name in sys.modules:
            callback()


install()

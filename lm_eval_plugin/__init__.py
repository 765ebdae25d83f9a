"""lm-eval integration of aura-tl: the `aura-hooked` model and the registration of the project's tasks.

Kept empty on purpose: the start-up hook imports `lm_eval_plugin.autoload` on every Python start.
"""

"""``gpt2probe.hooks``, kept as an import path for users: the hooks live in :mod:`gpt2probe.model.hooks`."""

from .model.hooks import HookFn, HookPoint, HookRegistry, count_torch_hooks

__all__ = ["HookFn", "HookPoint", "HookRegistry", "count_torch_hooks"]

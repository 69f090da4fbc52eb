"""Splice SAEs and transcoders into the forward pass, as SAELens's ``HookedSAETransformer`` does.

An SAE on ``<hook>`` replaces the activation there by its reconstruction; a transcoder
replaces its ``hook_name_out`` (the MLP's output) by its prediction from ``hook_name`` (the
MLP's input). Each spliced module's stages become hook names while it is spliced:
``"<hook>.hook_sae_input"``, ``"<hook>.hook_sae_acts_pre"``, ``"<hook>.hook_sae_acts_post"``,
``"<hook>.hook_sae_recons"`` and, with ``use_error_term=True``, ``"<hook>.hook_sae_error"``
(``<hook>`` is the module's ``cfg.hook_name``), so captures, ablations and steering reach
features through the same hook functions as every other name.

With ``use_error_term=True`` the activation becomes ``x + (recons - clean_recons)``, where
``clean_recons`` is the reconstruction without any hook edits, computed without gradient
(the error term ``x - clean_recons`` is a constant, as in SAELens). When no hook edits a
stage this is ``x + 0``: the model computes exactly what it computed without the splice.

Everything goes through :class:`~gpt2probe.model.hooks.HookRegistry` by hook name: nothing here
touches the model's modules, and every hook is removed on exit, exceptions included.

Order: hook functions on one name run in the order they were attached. Functions attached
on ``<hook>`` inside ``with probe.saes(...)`` run after the splice, so they see (and may
edit) the reconstruction; a transcoder reads its input when the splice's function on
``hook_name`` runs, so an edit of that name attached inside the block comes too late for
it: attach such edits before splicing (an outer ``with probe.hooks(...)``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor

from .. import names as N
from ..errors import InvalidArgumentError, InvalidTypeError, SAEMismatchError
from ..model.config import ProbeConfig
from ..model.hooks import HookPoint, HookRegistry
from .config import SAEConfig, check_fits, check_placed

STAGES = N.SAE_STAGES[:-1]  # input, acts_pre, acts_post, recons: one list of these names, in gpt2probe.names
ERROR = N.SAE_STAGES[-1]  # hook_sae_error, with use_error_term=True


def _no_tap(stage: str, tensor: Tensor) -> Tensor:
    return tensor


def stage_names(cfg: SAEConfig, use_error_term: bool) -> list[str]:
    """The hook names a spliced module adds, in the order a forward pass reaches them."""
    return [f"{cfg.hook_name}.{stage}" for stage in (*STAGES, *((ERROR,) if use_error_term else ()))]


def _check(saes: Sequence[Any], probe_cfg: ProbeConfig) -> list[Any]:
    if isinstance(saes, Mapping):  # what load_saes / load_transcoders return
        raise InvalidTypeError(f"saes must be SAE or Transcoder objects or a list of them, got a {type(saes).__name__}: "
                               "pass list(saes.values())")
    if isinstance(saes, (str, bytes)) or not isinstance(saes, Sequence):
        saes = [saes]  # one coder, as SAELens's run_with_saes takes it
    saes = list(saes)
    seen: dict[str, Any] = {}
    for sae in saes:
        cfg = getattr(sae, "cfg", None)
        if not isinstance(cfg, SAEConfig) or not callable(getattr(sae, "run_stages", None)):
            raise InvalidTypeError(f"saes must be gpt2probe SAE or Transcoder objects, got {type(sae).__name__}")
        check_fits(cfg, probe_cfg)
        check_placed(sae, cfg, probe_cfg)
        for hook in {cfg.hook_name, cfg.write_hook}:
            if hook in seen:
                raise InvalidArgumentError(f"two spliced modules use {hook!r} ({seen[hook]!r} and {sae!r}); splice one")
            seen[hook] = sae
    return saes


def _pair_hooks(sae: Any, registry: HookRegistry, use_error_term: bool) -> list[tuple[str, Any]]:
    """The hook functions that splice ``sae``: ``[(name, fn)]``."""
    cfg: SAEConfig = sae.cfg
    prefix = cfg.hook_name
    names = stage_names(cfg, use_error_term)

    def tap(stage: str, tensor: Tensor) -> Tensor:
        return registry.dispatch(f"{prefix}.{stage}", tensor)

    def replace(x: Tensor, target: Tensor) -> Tensor:
        """What goes where ``target`` was: the spliced output, made from input ``x``."""
        out = sae.run_stages(x, tap)
        if not use_error_term:
            return out
        if any(registry.hooked(name) for name in names[:-1]):
            with torch.no_grad():
                clean = sae.run_stages(x, _no_tap)
        else:
            clean = out.detach()
        error = (target - clean).detach()
        new_error = tap(ERROR, error)
        if new_error is not error:
            return out + new_error
        return target.detach() + (out - clean) if target.requires_grad else target + (out - clean)

    if not cfg.is_transcoder:
        return [(prefix, lambda x, hook: replace(x, x))]
    slot: dict[str, Tensor] = {}

    def read_input(x: Tensor, hook: HookPoint) -> None:
        slot["x"] = x

    def write_output(target: Tensor, hook: HookPoint) -> Tensor:
        if "x" not in slot:
            raise InvalidArgumentError(f"the transcoder's input {prefix!r} was not seen before its output "
                                       f"{cfg.hook_name_out!r}: the input hook must come first in the forward pass")
        return replace(slot.pop("x"), target)

    return [(prefix, read_input), (cfg.write_hook, write_output)]  # write_hook: hook_name_out, as a str


@contextmanager
def spliced(registry: HookRegistry, probe_cfg: ProbeConfig, saes: Sequence[Any], *,
            use_error_term: bool = False) -> Iterator[None]:
    """Splice ``saes`` for the duration of the block (see the module docstring)."""
    if not isinstance(use_error_term, bool):
        raise InvalidTypeError(f"use_error_term must be True or False, got {use_error_term!r}")
    saes = _check(saes, probe_cfg)
    for sae in saes:
        cfg = sae.cfg
        if cfg.is_transcoder and registry.valid_names.index(cfg.hook_name) >= registry.valid_names.index(cfg.hook_name_out):
            raise SAEMismatchError(f"{sae!r} reads {cfg.hook_name!r}, which the forward pass reaches after "
                                   f"{cfg.hook_name_out!r}, where it writes")
    extra = [(name, sae.cfg.hook_name) for sae in saes for name in stage_names(sae.cfg, use_error_term)]
    pairs = [pair for sae in saes for pair in _pair_hooks(sae, registry, use_error_term)]
    with ExitStack() as stack:
        stack.enter_context(registry.extra_names(extra))
        stack.enter_context(registry.using(pairs))
        yield

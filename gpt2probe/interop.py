"""Hand a probe's model to TransformerLens, sharing its weights (the ``transformer-lens`` extra).

TransformerLens 4's ``TransformerBridge`` wraps a Hugging Face model *in place*: it swaps
the model's attention and MLP modules for its own components and switches the model's
config to eager attention. Done on the probe's own model, that would leave the probe
reading modules it no longer knows (its pattern hooks stop firing). So the bridge gets
a twin of the model instead: a new tree of modules whose parameters and buffers are the
*same tensors* as the probe's (no weight is copied; an in-place edit through either side
is seen by both) and whose config is its own copy. Hooks attached to the probe's modules
are not carried over, so neither library sees the other's hooks.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

from torch import nn

from .errors import MissingExtraError

INSTALL_HINT = "pip install 'gpt2probe[transformer-lens]'"


def twin(model: nn.Module) -> nn.Module:
    """A new module tree over the same parameters and buffers, with its own config and no hooks."""
    config = getattr(model, "config", None)
    config_copy = copy.deepcopy(config) if config is not None else None
    made: dict[nn.Module, nn.Module] = {}  # keyed by the module object (identity), never id()

    def clone(module: nn.Module) -> nn.Module:
        if module in made:  # a module used twice stays one module
            return made[module]
        new = module.__class__.__new__(module.__class__)
        state = dict(module.__dict__)
        for key, value in state.items():
            if config is not None and value is config:
                state[key] = config_copy
            elif key.endswith(("_hooks", "_hooks_with_kwargs", "_hooks_always_called")) and isinstance(value, dict):
                state[key] = OrderedDict()  # the probe's hooks stay on the probe's modules
        state["_parameters"] = dict(module._parameters)  # the same Parameter objects
        state["_buffers"] = dict(module._buffers)
        state["_non_persistent_buffers_set"] = set(module._non_persistent_buffers_set)
        new.__dict__ = state
        made[module] = new
        new._modules = {name: None if child is None else clone(child) for name, child in module._modules.items()}
        return new

    return clone(model)


def to_transformer_lens(probe: Any) -> Any:  # a GPT2Probe (not imported: probe.py imports this module)
    """A TransformerLens ``TransformerBridge`` over the probe's weights (see the module docstring).

    The bridge runs with eager attention (TransformerLens needs the pattern) on the probe's
    device and dtype, with its own copy of the tokenizer (TransformerLens sets its padding side).
    """
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError as error:
        raise MissingExtraError(
            f"probe.to_transformer_lens() needs TransformerLens 4, which is not installed: {INSTALL_HINT}"
        ) from error
    tokenizer = copy.deepcopy(probe.tokenizer)
    # TransformerLens reloads a tokenizer from its name unless it was made with add_bos_token;
    # it then checks whether the tokenizer really prepends BOS, and prepends it itself if not.
    tokenizer.init_kwargs.setdefault("name_or_path", "gpt2")
    tokenizer.init_kwargs["add_bos_token"] = True
    return TransformerBridge.boot_transformers(
        probe.cfg.model_name,
        hf_model=twin(probe.model),
        tokenizer=tokenizer,
        device=str(probe.cfg.device),
        dtype=probe.cfg.dtype,
    )

"""Everything that knows GPT-2's Hugging Face module tree, in one sub-package (the model seam).

- :mod:`~gpt2probe.model.hooks`: hook points with TransformerLens's names on the HF modules;
- :mod:`~gpt2probe.model.attention`: the seam to transformers' attention implementations;
- :mod:`~gpt2probe.model.weights`: the weights in TransformerLens's orientation, every
  LayerNorm and each layer's attention scaling;
- :mod:`~gpt2probe.model.layernorm`: GPT-2's LayerNorm, its frozen-scale map and its backward;
- :mod:`~gpt2probe.model.config`: the sizes, read from the HF config;
- :mod:`~gpt2probe.model.modules`: where the body, blocks and final norm are in the tree;
- :mod:`~gpt2probe.model.decoding`: one forward step with the KV cache;
- :mod:`~gpt2probe.model.parameters`: HF's parameter names (state-dict keys) and their component names.

The rest of the package asks these modules (or the probe) and never reaches
``model.transformer``, ``ln_f``, ``c_attn``... itself, nor spells a parameter name such as
``transformer.h.0.attn.c_attn.weight``; ``tests/test_layout.py`` holds it to that.
"""

from .config import ProbeConfig
from .hooks import HookFn, HookPoint, HookRegistry, count_torch_hooks
from .layernorm import LayerNorm
from .weights import BlockWeights, Weights

__all__ = ["BlockWeights", "HookFn", "HookPoint", "HookRegistry", "LayerNorm", "ProbeConfig", "Weights",
           "count_torch_hooks"]

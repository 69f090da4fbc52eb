"""Features instead of neurons: sparse autoencoders and transcoders, in SAELens 6's format and math.

- :mod:`.config`: :class:`SAEConfig`, the settings, checked once.
- :mod:`.activations`: the nonlinearities (ReLU, top-k, JumpReLU).
- :mod:`.coder`: :class:`SAE` and :class:`Transcoder`, the modules (encode, decode, load, save).
- :mod:`.saelens_format`, :mod:`.dunefsky_format`, :mod:`.files`: the file formats read and written.
- :mod:`.pretrained`: SAELens's releases through ``huggingface_hub``, with ``gpt2probe.load``'s offline rules.
- :mod:`.splice`: SAEs in the forward pass (``probe.saes(...)``, ``probe.run_with_saes``).
- :mod:`.shipped`: the SAEs and transcoders that ship with a model (``load_saes``, ``load_transcoders``).

Exact and attribution patching over features live with the other interventions:
:mod:`gpt2probe.interventions.feature_patching` (``feature_patch``, ``feature_attribution``).
"""

from .coder import SAE, SparseCoder, Transcoder
from .config import ARCHITECTURES, SAEConfig
from .shipped import load_saes, load_transcoders

__all__ = ["ARCHITECTURES", "SAE", "SAEConfig", "SparseCoder", "Transcoder", "load_saes", "load_transcoders"]

"""Features instead of neurons: sparse autoencoders and transcoders, in SAELens 6's format and math.

- :mod:`.config`: :class:`SAEConfig`, the settings, checked once.
- :mod:`.activations`: the nonlinearities (ReLU, top-k, JumpReLU).
- :mod:`.coder`: :class:`SAE` and :class:`Transcoder`, the modules.
"""

from .coder import SAE, SparseCoder, Transcoder
from .config import ARCHITECTURES, SAEConfig

__all__ = ["ARCHITECTURES", "SAE", "SAEConfig", "SparseCoder", "Transcoder"]

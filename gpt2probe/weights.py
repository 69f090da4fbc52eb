"""``gpt2probe.weights``, kept as an import path for users: the weights live in :mod:`gpt2probe.model.weights`."""

from .model.weights import BlockWeights, Weights

__all__ = ["BlockWeights", "Weights"]

"""Attribution graphs over transcoders: trace a prediction through features, prune, save, intervene.

:func:`attribution_graph` builds an :class:`AttributionGraph` of one prompt over the local
replacement model (MLPs replaced by transcoders, attention patterns and LayerNorm scales
frozen, an error node per layer and position); :func:`intervene_features` sets features to
chosen values in the real model. Transcoders are any objects that fit :class:`TranscoderLike`.
"""

from .attribute import attribution_graph
from .graph import AttributionGraph
from .influence import PruneResult
from .intervene import intervene_features
from .transcoders import TranscoderLike

__all__ = ["AttributionGraph", "PruneResult", "TranscoderLike", "attribution_graph", "intervene_features"]

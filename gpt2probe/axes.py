"""The axis glossary: every dimension name used in gpt2probe's shape annotations.

Names follow TransformerLens so that shapes read the same in both libraries.

=============  =====================================================================
axis           meaning
=============  =====================================================================
``batch``      prompts processed together (a left-padded batch)
``pos``        token positions; ``query_pos`` / ``key_pos`` inside attention
``d_model``    the residual stream width (768 for GPT-2 small)
``head``       attention heads of one layer; ``d_head`` is one head's width
``d_mlp``      MLP hidden width (``4 * d_model`` for GPT-2)
``d_vocab``    vocabulary size (50257 for GPT-2)
``layer``      one entry per block; ``layer_plus_1`` adds the embedding stream
``component``  one entry per additive piece of the residual stream
``stream``     one entry per logit-lens read-out point (embeddings, then each block)
``k``          the top-k predictions kept per stream and position
=============  =====================================================================

Annotations are written inline on each function (``Float[Tensor, "batch pos d_model"]``);
the test suite checks them at run time with beartype, and users can too
(:mod:`gpt2probe.shape_checking`: ``GPT2PROBE_CHECK_SHAPES=1``). Single-axis shapes are
written with a leading space (``" batch"``) so jaxtyping reads them as names.
"""

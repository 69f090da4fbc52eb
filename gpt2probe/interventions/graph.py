"""The residual-stream graph of GPT-2: senders, receivers and the edges between them.

Every component *writes* into the residual stream (a sender) and most *read* it (a
receiver). At each position the residual stream is the sum of what the earlier senders
wrote, so each receiver's input splits into one term per earlier sender: those terms are
the edges.

=========  =======================================  ==============================================
node       sends (its write into the residual)      receives (its read of the residual)
=========  =======================================  ==============================================
embed      token embedding (``hook_embed``)          --
L{l}H{h}   ``z[:, :, h] @ W_O[l, h]``               ``.q``, ``.k``, ``.v``: the head's three inputs
MLP{l}     ``hook_mlp_out``                          the MLP's input (``ln_2``'s input)
logits     --                                        the final residual (``ln_final``'s input)
=========  =======================================  ==============================================

An edge goes from a sender to every later receiver: embed to all; head ``(l, h)`` to every
head of a later layer, to ``MLP{l}`` and later MLPs, and to the logits; ``MLP{l}`` to the
heads and MLPs of later layers and to the logits. Position embeddings, the attention
output bias ``b_O`` and the LayerNorm biases are the same in every run and belong to no
edge. Edges are summed over positions (a sender at position ``p`` reaches a receiver's
input at ``p`` only).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidArgumentError, InvalidTypeError


@dataclass(frozen=True, order=True)
class Node:
    """A sender or receiver: ``kind`` is ``"embed"``, ``"head"``, ``"mlp"`` or ``"logits"``."""

    kind: str
    layer: int = -1
    head: int = -1

    def __str__(self) -> str:
        if self.kind == "head":
            return f"L{self.layer}H{self.head}"
        if self.kind == "mlp":
            return f"MLP{self.layer}"
        return self.kind

    @classmethod
    def parse(cls, text: str) -> Node:
        """``"embed"``, ``"logits"``, ``"L1H0"`` or ``"MLP3"`` back to a node."""
        if not isinstance(text, str):
            raise InvalidTypeError(f"a node is a string such as 'embed', 'L1H0' or 'MLP3', got {type(text).__name__}")
        if text in ("embed", "logits"):
            return cls(text)
        if text.startswith("MLP") and text[3:].isdigit():
            return cls("mlp", int(text[3:]))
        if text.startswith("L") and "H" in text:
            layer, _, head = text[1:].partition("H")
            if layer.isdigit() and head.isdigit():
                return cls("head", int(layer), int(head))
        raise InvalidArgumentError(f"{text!r} is not a node: use 'embed', 'logits', 'L<layer>H<head>' or 'MLP<layer>'")

    @property
    def column(self) -> float:
        """Where the node sits left to right: embed 0, layer ``l``'s heads ``l + 1``, its MLP ``l + 1.5``."""
        if self.kind == "embed":
            return 0.0
        if self.kind == "head":
            return self.layer + 1.0
        if self.kind == "mlp":
            return self.layer + 1.5
        return float("inf")


EMBED = Node("embed")
LOGITS = Node("logits")
INPUTS = ("q", "k", "v")


@dataclass(frozen=True, order=True)
class Edge:
    """``sender`` -> ``receiver`` (``input`` is ``"q"``, ``"k"`` or ``"v"`` for a head receiver, else ``""``)."""

    sender: Node
    receiver: Node
    input: str = ""

    def __str__(self) -> str:
        return f"{self.sender} -> {self.receiver}{'.' + self.input if self.input else ''}"

    @classmethod
    def parse(cls, text: str) -> Edge:
        """The inverse of ``str``: ``"L0H0 -> L1H0.k"``."""
        if not isinstance(text, str):
            raise InvalidTypeError(f"an edge is a string such as 'L0H0 -> L1H0.k', got {type(text).__name__}")
        sender, arrow, receiver = text.partition("->")
        if not arrow:
            raise InvalidArgumentError(f"{text!r} is not an edge: write 'SENDER -> RECEIVER', e.g. 'L0H0 -> L1H0.k'")
        receiver, _, which = receiver.strip().partition(".")
        return cls(Node.parse(sender.strip()), Node.parse(receiver), which)


def senders(n_layers: int, n_heads: int) -> list[Node]:
    """Every sender, in forward order."""
    nodes = [EMBED]
    for layer in range(n_layers):
        nodes += [Node("head", layer, h) for h in range(n_heads)] + [Node("mlp", layer)]
    return nodes


def receivers(n_layers: int, n_heads: int) -> list[tuple[Node, str]]:
    """Every receiver with its input, in forward order."""
    out: list[tuple[Node, str]] = []
    for layer in range(n_layers):
        out += [(Node("head", layer, h), which) for which in INPUTS for h in range(n_heads)]
        out.append((Node("mlp", layer), ""))
    out.append((LOGITS, ""))
    return out


def feeds(sender: Node, receiver: Node) -> bool:
    """Whether ``sender``'s write is part of ``receiver``'s input."""
    if sender.kind == "embed" or receiver.kind == "logits":
        return True
    if receiver.kind == "head":
        return sender.layer < receiver.layer
    return sender.layer < receiver.layer or (sender.kind == "head" and sender.layer == receiver.layer)


def all_edges(n_layers: int, n_heads: int) -> list[Edge]:
    """Every edge of the graph, senders in forward order, then receivers in forward order."""
    return [Edge(s, r, which) for s in senders(n_layers, n_heads) for r, which in receivers(n_layers, n_heads) if feeds(s, r)]

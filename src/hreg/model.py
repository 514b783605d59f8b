"""The `model` config group (and `model/norm`): the course's MLP.

784 -> 100 -> 100 -> 100 -> 10 by default. Each hidden block is
Linear -> [norm] -> ReLU -> [Dropout]: normalisation (BatchNorm1d or LayerNorm)
sits between the linear layer and its activation, as in Ioffe & Szegedy, and
dropout acts on the activation that the next layer reads. The classifier is a
plain Linear that returns logits (cross-entropy applies the softmax).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

#: Builds a normalisation layer from a feature count, e.g. ``functools.partial(nn.BatchNorm1d)``.
NormFactory = Callable[[int], nn.Module]


class MLP(nn.Sequential):
    """Flatten, hidden blocks, classifier; ``linear_layers()`` lists what is regularised and monitored."""

    def __init__(
        self,
        in_features: int = 784,
        hidden: Sequence[int] = (100, 100, 100),
        num_classes: int = 10,
        dropout: float = 0.0,
        norm: NormFactory | None = None,
    ) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if norm is not None:
                layers.append(norm(size))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)

    def linear_layers(self) -> dict[str, nn.Linear]:
        """Linear layers by name: ``fc1`` ... ``fcK`` (the last one is the classifier)."""
        linears = [m for m in self if isinstance(m, nn.Linear)]
        return {f"fc{i}": m for i, m in enumerate(linears, start=1)}

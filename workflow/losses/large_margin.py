"""Large margin loss: cross-entropy plus a distance-based margin term.

Racoviteanu, Florea & Badea (large-margin loss on L2-normalised embeddings
and class centres).
"""

import torch
import torch.nn.functional as F
from torch import nn

from workflow.losses import register_loss
from workflow.losses.base import Loss
from workflow.losses.class_anchor_margin import pairwise_safe_distance
from workflow.registry import Number
from workflow.search import Range


@register_loss(
    "lm",
    geometry="cosine",
    anchors=True,
    classifies=True,
    params={"beta": Number(ge=0)},
    search={"params.beta": Range(1.0e-3, 0.1, 0.01, "paper (0.01); range ours")},
)
class LargeMarginLoss(Loss):
    """Cross-entropy plus a large-margin term on normalised class centres.

    ``L = CE + beta * L_LM`` where CE is the cross-entropy of a linear head
    ``nn.Linear(D, C)`` on the raw embedding ``x``, and, with ``x^ = x/||x||``
    and learnable centres ``c^_k = c_k/||c_k||``,

    ``L_LM = sum_i ( ||x^_i - c^_{y_i}|| - 1/(C-1) sum_{k != y_i} ||x^_i - c^_k|| )``

    (a sum over the batch, as in the paper; CE is a batch mean). Distances
    are ``sqrt(max(||x^_i - c^_k||^2, 1e-12))`` (``pairwise_safe_distance``:
    finite gradient when ``x^_i = c^_k``).

    Args:
        num_classes: number of classes C (at least 2).
        embedding_size: embedding dimension D; centres have shape (C, D),
            initialised from a standard normal distribution.
        beta: weight of ``L_LM``.

    After each forward, ``last_terms`` holds ``{"ce": CE, "lm": beta * L_LM}``
    (detached 0-d tensors, weighted as they enter L; they sum to L).
    """

    def __init__(self, num_classes: int, embedding_size: int, beta: float = 0.01):
        super().__init__()
        if num_classes < 2:
            raise ValueError("LargeMarginLoss needs at least 2 classes")
        self.classifier = nn.Linear(embedding_size, num_classes)
        self.centres = nn.Parameter(torch.randn(num_classes, embedding_size))
        self.beta = beta

    def margin_term(self, embeddings, labels):
        x = F.normalize(embeddings, dim=1)
        c = F.normalize(self.centres, dim=1)
        dist = pairwise_safe_distance(x, c)  # (N, C)
        own = dist.gather(1, labels[:, None]).squeeze(1)
        others = (dist.sum(1) - own) / (len(c) - 1)
        return (own - others).sum()

    def forward(self, embeddings, labels):
        ce = F.cross_entropy(self.classifier(embeddings), labels)
        lm = self.beta * self.margin_term(embeddings, labels)
        self.last_terms = {
            "ce": ce.detach(),
            "lm": lm.detach(),
        }  # for the training curves
        return ce + lm

    def predict(self, embeddings):
        """Class logits of the CE head, shape (N, C)."""
        return self.classifier(embeddings)

    def class_anchors(self):
        """The normalised centres ``c^``, shape (C, D), detached."""
        return F.normalize(self.centres.detach(), dim=1)

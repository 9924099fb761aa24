"""Softmax cross-entropy on a linear classifier head (the usual baseline)."""

import torch.nn.functional as F
from torch import nn

from workflow.losses import register_loss
from workflow.losses.base import Loss


@register_loss("ce", geometry="euclidean", anchors=False, classifies=True, params={})
class CrossEntropyLoss(Loss):
    """Cross-entropy of a linear classifier (with bias) on the embedding.

    ``L = mean_i -log softmax(W f_i + b)_{y_i}``

    Args:
        num_classes: number of classes C.
        embedding_size: embedding dimension D; the head is ``nn.Linear(D, C)``.
    """

    def __init__(self, num_classes: int, embedding_size: int):
        super().__init__()
        self.classifier = nn.Linear(embedding_size, num_classes)

    def predict(self, embeddings):
        """Class logits, shape (N, C)."""
        return self.classifier(embeddings)

    def forward(self, embeddings, labels):
        return F.cross_entropy(self.predict(embeddings), labels)

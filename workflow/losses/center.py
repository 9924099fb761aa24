"""Centre loss with softmax cross-entropy.

Wen, Zhang, Li & Qiao, "A Discriminative Feature Learning Approach for Deep
Face Recognition", ECCV 2016.
"""

import torch
import torch.nn.functional as F
from torch import nn

from workflow.losses import register_loss
from workflow.losses.base import Loss
from workflow.registry import Number
from workflow.search import Range


def centre_term(embeddings, centres, labels):
    """``L_C = 1/2 mean_i ||x_i - c_{y_i}||^2`` (shared with the island loss)."""
    return 0.5 * (embeddings - centres[labels]).pow(2).sum(1).mean()


@register_loss(
    "center",
    geometry="euclidean",
    anchors=True,
    classifies=True,
    params={"lambda_c": Number(ge=0)},
    search={
        "params.lambda_c": Range(
            3.0e-4, 3.0e-2, 3.0e-3, "paper (lambda = 0.003); range ours"
        )
    },
)
class CenterLoss(Loss):
    """Cross-entropy of a linear head plus the centre loss.

    ``L = CE + lambda_c * L_C`` with ``L_C = 1/2 mean_i ||x_i - c_{y_i}||^2``,
    ``x_i`` the embedding, ``c_k`` a learnable centre per class and CE the
    cross-entropy of ``nn.Linear(D, C)`` on ``x``.

    Source of the defaults: the paper's face experiments use
    ``lambda = 0.003`` (``lambda_c`` here) and ``alpha = 0.5`` (recalled from
    the paper; its full text could not be re-read offline). ``L_C`` is a
    batch mean (the paper
    writes a sum over the mini-batch; the authors' Caffe layer divides by the
    batch size, which keeps ``lambda_c`` independent of the batch size).

    Difference from the paper: there the centres follow their own update
    rule ``c_j <- c_j - alpha * sum_i [y_i = j] (c_j - x_i) / (1 + n_j)``
    with ``alpha = 0.5``. Here they are ordinary parameters trained by the
    cell's optimiser on the gradient of ``lambda_c * L_C``, like the anchors of
    CAM and LM; ``losses.<name>.lr_multiplier`` sets their own learning rate.

    Args:
        num_classes: number of classes C.
        embedding_size: embedding dimension D; centres (C, D) start from a
            standard normal distribution.
        lambda_c: weight of the centre term.

    After each forward, ``last_terms`` holds ``{"ce": CE, "center":
    lambda_c * L_C}`` (detached 0-d tensors, weighted as they enter L; they
    sum to L).
    """

    def __init__(self, num_classes: int, embedding_size: int, lambda_c: float = 0.003):
        super().__init__()
        self.classifier = nn.Linear(embedding_size, num_classes)
        self.centres = nn.Parameter(torch.randn(num_classes, embedding_size))
        self.lambda_c = lambda_c

    def forward(self, embeddings, labels):
        ce = F.cross_entropy(self.classifier(embeddings), labels)
        centre = self.lambda_c * centre_term(embeddings, self.centres, labels)
        self.last_terms = {
            "ce": ce.detach(),
            "center": centre.detach(),
        }  # for the training curves
        return ce + centre

    def predict(self, embeddings):
        """Class logits of the CE head, shape (N, C)."""
        return self.classifier(embeddings)

    def class_anchors(self):
        """The centres, shape (C, D), detached."""
        return self.centres.detach()

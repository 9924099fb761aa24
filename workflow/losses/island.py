"""Island loss with softmax cross-entropy.

Cai, Meng, Khan, Li, O'Reilly & Tong, "Island Loss for Learning
Discriminative Features in Facial Expression Recognition", IEEE FG 2018
(arXiv:1710.03144). The LM loss was inspired by it.
"""

import torch
import torch.nn.functional as F
from torch import nn

from workflow.losses import register_loss
from workflow.losses.base import Loss
from workflow.losses.center import centre_term
from workflow.losses.class_anchor_margin import off_diagonal
from workflow.registry import Number
from workflow.search import Range


@register_loss(
    "island",
    geometry="euclidean",
    anchors=True,
    classifies=True,
    params={"lambda_il": Number(ge=0), "lambda_1": Number(ge=0)},
    search={
        "params.lambda_il": Range(
            1.0e-3, 0.1, 0.01, "paper (lambda = 0.01); range ours"
        ),
        "params.lambda_1": Range(1.0, 100.0, 10.0, "paper (lambda_1 = 10); range ours"),
    },
)
class IslandLoss(Loss):
    """Cross-entropy plus the centre loss plus a pairwise centre repeller.

    ``L = CE + lambda_il * L_IL`` with

    ``L_IL = L_C + lambda_1 * sum_j sum_{k != j} ( c_k . c_j / (||c_k|| ||c_j||) + 1 )``

    where ``L_C = 1/2 mean_i ||x_i - c_{y_i}||^2`` is the centre loss (as in
    ``center``), the double sum runs over ordered pairs of all C classes
    (each unordered pair counts twice, as written in the paper) and CE is the
    cross-entropy of ``nn.Linear(D, C)`` on the embedding. The pair term is
    0 for opposite centres and 2 per pair for parallel ones, so it spreads
    the centres apart in angle.

    Defaults from the paper's experiments: ``lambda = 0.01`` (``lambda_il``)
    and ``lambda_1 = 10``. (Recalled from the paper; its full text could not
    be re-read offline.) As for ``center``, the centres are trained by the
    optimiser (the paper's separate centre update with ``alpha = 0.5`` maps to
    ``losses.<name>.lr_multiplier``). Cosines use ``F.normalize`` (norms
    clamped at 1e-12), so a zero centre gives a finite gradient.

    Args:
        num_classes: number of classes C (at least 2).
        embedding_size: embedding dimension D; centres (C, D) start from a
            standard normal distribution.
        lambda_il: weight of ``L_IL``.
        lambda_1: weight of the pairwise term inside ``L_IL``.

    After each forward, ``last_terms`` holds ``{"ce": CE, "center":
    lambda_il * L_C, "island_pairs": lambda_il * lambda_1 * sum_{j != k}
    (cos(c_j, c_k) + 1)}`` (detached 0-d tensors, weighted as they enter L;
    they sum to L).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        lambda_il: float = 0.01,
        lambda_1: float = 10.0,
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError("IslandLoss needs at least 2 classes")
        self.classifier = nn.Linear(embedding_size, num_classes)
        self.centres = nn.Parameter(torch.randn(num_classes, embedding_size))
        self.lambda_il = lambda_il
        self.lambda_1 = lambda_1

    def pair_term(self):
        """``sum_{j != k} (cos(c_j, c_k) + 1)``."""
        c = F.normalize(self.centres, dim=1)
        cosine = c @ c.T
        return (off_diagonal(cosine) + 1).sum()

    def forward(self, embeddings, labels):
        ce = F.cross_entropy(self.classifier(embeddings), labels)
        centre = self.lambda_il * centre_term(embeddings, self.centres, labels)
        pairs = self.lambda_il * self.lambda_1 * self.pair_term()
        # For the training curves: lambda_il * L_IL split into its two parts.
        self.last_terms = {
            "ce": ce.detach(),
            "center": centre.detach(),
            "island_pairs": pairs.detach(),
        }
        return ce + centre + pairs

    def predict(self, embeddings):
        """Class logits of the CE head, shape (N, C)."""
        return self.classifier(embeddings)

    def class_anchors(self):
        """The centres, shape (C, D), detached."""
        return self.centres.detach()

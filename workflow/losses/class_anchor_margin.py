"""Class anchor margin (CAM) loss.

Ghita & Ionescu, "Class Anchor Margin Loss for Content-Based Image Retrieval",
arXiv:2306.00630 (2023).
"""

import torch
from torch import nn

from workflow.losses import register_loss


def safe_norm(x, dim=-1, eps=1e-12):
    """L2 norm ``sqrt(max(||x||^2, eps))``: equal to ``||x||`` unless
    ``||x|| < sqrt(eps) = 1e-6``, and with a finite (zero) gradient at
    ``x = 0``, where a plain ``sqrt`` gives NaN."""
    return x.pow(2).sum(dim).clamp_min(eps).sqrt()


def pairwise_safe_distance(u, v, eps=1e-12):
    """(N, M) L2 distances ``sqrt(max(||u_i - v_j||^2, eps))`` as in
    :func:`safe_norm`, with the squared distance expanded as
    ``||u_i||^2 + ||v_j||^2 - 2 u_i . v_j``: one matrix product instead of an
    (N, M, D) difference tensor, which made CAM and LM 10-20x slower at
    C = 100, D = 512. Equal up to rounding, except that points much closer
    than their norms lose digits (float32 keeps about 7 digits of
    ``||u||^2``), which only blurs distances far below the margins."""
    squared = u.pow(2).sum(1)[:, None] + v.pow(2).sum(1)[None, :] - 2 * u @ v.T
    return squared.clamp_min(eps).sqrt()


def off_diagonal(matrix):
    """The off-diagonal elements of a square matrix, row by row: what
    ``matrix[~torch.eye(n, dtype=bool)]`` gives, the same values in the same
    order (so the same sums, bit for bit), but indexed by arithmetic on
    ``arange``. A boolean mask's result has a shape that depends on the
    data, which breaks a ``torch.compile`` graph (and its CUDA graph) in
    two; this has a shape fixed by ``n``."""
    n = len(matrix)
    k = torch.arange(n * (n - 1), device=matrix.device)
    row, col = k // (n - 1), k % (n - 1)
    return matrix[row, col + (col >= row)]  # skip the diagonal in each row


@register_loss("cam")
class ClassAnchorMarginLoss(nn.Module):
    """Attractor-repeller loss with one learnable anchor ``a_c`` per class.

    ``L = w_attractor * L_A + w_repeller * L_R + w_min_norm * L_N`` with

    - attractor ``L_A = mean_i 1/2 ||f_i - a_{y_i}||^2``;
    - repeller ``L_R = 1/2 sum_{c != c'} max(0, 2m - ||a_c - a_{c'}||)^2``
      (over ordered pairs, so each unordered pair counts twice);
    - minimum norm ``L_N = sum_c max(0, p - ||a_c||)``.

    Anchor-to-anchor distances and anchor norms use :func:`safe_norm`
    (distances through :func:`pairwise_safe_distance`), so two coinciding
    anchors (or a zero anchor) give a finite, zero gradient through that
    distance instead of NaN.

    After each forward, ``last_terms`` holds ``{"attractor": w_A L_A,
    "repeller": w_R L_R, "min_norm": w_N L_N}`` (detached 0-d tensors,
    weighted as they enter L, so they sum to the returned loss).

    Args:
        num_classes: number of classes C.
        embedding_size: embedding dimension D; anchors have shape (C, D) and
            are initialised from a standard normal distribution.
        margin: m; anchors are pushed at least ``2m`` apart.
        min_norm: p; anchors are pushed to norms of at least ``p``.
        w_attractor, w_repeller, w_min_norm: weights of the three terms.

    The defaults ``margin=1.0``, ``min_norm=1.0`` and the standard-normal
    anchor initialisation were not found in the paper (only its abstract
    was available); they are chosen here as sensible values.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 1.0,
        min_norm: float = 1.0,
        w_attractor: float = 1.0,
        w_repeller: float = 1.0,
        w_min_norm: float = 1.0,
    ):
        super().__init__()
        self.anchors = nn.Parameter(torch.randn(num_classes, embedding_size))
        self.margin = margin
        self.min_norm = min_norm
        self.w_attractor = w_attractor
        self.w_repeller = w_repeller
        self.w_min_norm = w_min_norm

    def attractor(self, embeddings, labels):
        return 0.5 * (embeddings - self.anchors[labels]).pow(2).sum(1).mean()

    def repeller(self):
        a = self.anchors
        dist = pairwise_safe_distance(a, a)  # (C, C)
        return 0.5 * (2 * self.margin - off_diagonal(dist)).clamp_min(0).pow(2).sum()

    def min_norm_term(self):
        return (self.min_norm - safe_norm(self.anchors)).clamp_min(0).sum()

    def forward(self, embeddings, labels):
        terms = {
            "attractor": self.w_attractor * self.attractor(embeddings, labels),
            "repeller": self.w_repeller * self.repeller(),
            "min_norm": self.w_min_norm * self.min_norm_term(),
        }
        # For the training curves: each term detached, weighted as it enters L.
        self.last_terms = {name: value.detach() for name, value in terms.items()}
        return terms["attractor"] + terms["repeller"] + terms["min_norm"]

    def predict(self, embeddings):
        """Negative L2 distance to each anchor, shape (N, C)."""
        return -pairwise_safe_distance(embeddings, self.anchors)

    def class_anchors(self):
        """The anchors, shape (C, D), detached."""
        return self.anchors.detach()

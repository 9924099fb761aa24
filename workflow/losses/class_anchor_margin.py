"""Class anchor margin (CAM) loss.

Ghita & Ionescu, "Class Anchor Margin Loss for Content-Based Image Retrieval",
arXiv:2306.00630 (2023).
"""

import torch
from torch import nn

from workflow.losses import ShippedDefault, register_loss
from workflow.losses.base import Loss
from workflow.registry import Number, OneOf
from workflow.search import Choice, Range


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


REDUCTIONS = ("mean", "sum")
CAM_SHIPPED_SOURCE = (
    "ours: the fair-fight searches' best on both protocols (cam-t01; "
    "paper values not checked)"
)


@register_loss(
    "cam",
    geometry="euclidean",
    anchors=True,
    classifies=True,
    params={
        "margin": Number(gt=0),
        "min_norm": Number(ge=0),
        "init_norm": Number(gt=0, optional=True),
        "reduction": OneOf(REDUCTIONS),
        "w_attractor": Number(ge=0),
        "w_repeller": Number(ge=0),
        "w_min_norm": Number(ge=0),
    },
    # The paper's values could not be checked, so CAM ships the setting the
    # fair-fight searches found best on both protocols (trial cam-t01: rank
    # 1 of 12 on the CIFAR-100 closed set, 2 class-disjoint; best mean rank,
    # tied with cam-t02, 2 and 1, and ahead of it on the mean score relative
    # to each protocol's best: docs/losses.md "Shipped defaults"), found with
    # the backbone at lr 0.00197. At the class's own defaults (m = p = 1,
    # anchors from norm 0.5) and 1x the anchors never left the margin in a
    # short run (pairs_within_margin 1.0 in every epoch).
    shipped={
        key: ShippedDefault(value, CAM_SHIPPED_SOURCE)
        for key, value in {
            "lr_multiplier": 5.92,
            "params.margin": 0.779,
            "params.min_norm": 3.62,
            "params.init_norm": 2.6,
            "params.reduction": "sum",
        }.items()
    },
    # The paper's m and p could not be checked offline: ranges ours, a
    # factor 4 either side of 1.
    search={
        "params.margin": Range(0.25, 4.0, 1.0, "ours (paper values not checked)"),
        "params.min_norm": Range(0.25, 4.0, 1.0, "ours (paper values not checked)"),
        "params.init_norm": Range(
            0.05, 5.0, 0.5, "ours (0.5 is the default at m = p = 1)"
        ),
        "params.reduction": Choice(REDUCTIONS, "mean", "ours (the paper writes sums)"),
    },
)
class ClassAnchorMarginLoss(Loss):
    """Attractor-repeller loss with one learnable anchor ``a_c`` per class.

    ``L = w_attractor * L_A + w_repeller * L_R + w_min_norm * L_N`` with

    - attractor ``L_A = mean_i 1/2 ||f_i - a_{y_i}||^2`` (over the batch);
    - repeller ``L_R = red_{c != c'} 1/2 max(0, 2m - ||a_c - a_{c'}||)^2``
      over the ``C(C-1)`` ordered anchor pairs;
    - minimum norm ``L_N = red_c max(0, p - ||a_c||)`` over the ``C`` anchors;

    where ``red`` is ``reduction``:

    - ``"mean"`` (default): the mean over pairs and over anchors. Each term
      is then of order 1 whatever ``C``, and every anchor gets a gradient of
      the same order, about ``1/C``, from each term: the attractor reaches
      an anchor through the ``B/C`` batch items of its class (out of ``B``),
      the repeller through its ``2(C-1)`` of the ``C(C-1)`` pairs, the
      minimum norm through 1 of ``C`` anchors. With ``"sum"`` the repeller
      grows with ``C^2`` and, once active, dwarfs the attractor (measured on
      CIFAR-100, 64-d, m = 6: 6,590 against 33 in epoch 1).
    - ``"sum"``: the paper's formulas as written (sums over pairs and
      anchors).

    **Anchor initialisation** (``init_norm``). Anchors start from random
    directions (a standard normal draw, normalised) on the sphere of radius
    ``init_norm``. Every anchor's norm is then ``init_norm`` and every
    pairwise distance at most ``2 init_norm``, in any dimension ``D`` and
    for any ``C``. The default, half the smaller of ``m`` and ``p``
    (``0.5 * min(m, p)``; ``0.5 * m`` when ``p = 0``), makes all three terms
    act from the first step whatever ``m``, ``p``, ``D`` and ``C``: every
    anchor starts below ``p`` and every pair closer than ``2m`` (at most
    ``min(m, p) <= m`` apart). With the defaults ``m = p = 1`` it is 0.5.
    (A standard-normal start, as before, puts the norms near ``sqrt(D)``
    and the distances near ``sqrt(2D)``, about 8 at D = 32 and 32 at
    D = 512, far beyond ``2m`` and ``p``: repeller and minimum norm were
    then exactly 0 for the whole run.) What matters is the anchors' scale
    relative to ``2m`` and ``p``.

    Anchor-to-anchor distances and anchor norms use :func:`safe_norm`
    (distances through :func:`pairwise_safe_distance`), so two coinciding
    anchors (or a zero anchor) give a finite, zero gradient through that
    distance instead of NaN.

    After each forward, ``last_terms`` holds ``{"attractor": w_A L_A,
    "repeller": w_R L_R, "min_norm": w_N L_N}`` (detached 0-d tensors,
    weighted as they enter L, so they sum to the returned loss), and
    ``last_diagnostics`` holds ``pairs_within_margin`` (the fraction of
    anchor pairs closer than ``2m``: the repeller's active pairs) and
    ``anchors_below_min_norm`` (the fraction of anchors with norm below
    ``p``), both before the step's update.

    Args:
        num_classes: number of classes C.
        embedding_size: embedding dimension D; anchors have shape (C, D).
        margin: m > 0; anchors are pushed at least ``2m`` apart.
        min_norm: p >= 0; anchors are pushed to norms of at least ``p``.
        init_norm: the anchors' initial norm (> 0); None (default):
            ``0.5 * min(m, p)`` (``0.5 * m`` when ``p = 0``), see above.
        reduction: ``"mean"`` or ``"sum"`` of the repeller over pairs and
            of the minimum norm over anchors (the attractor is always a
            batch mean).
        w_attractor, w_repeller, w_min_norm: weights (>= 0) of the three
            terms; 0 switches a term off (the ablation of
            ``config/cifar100_fewshot.yaml``).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 1.0,
        min_norm: float = 1.0,
        init_norm: float | None = None,
        reduction: str = "mean",
        w_attractor: float = 1.0,
        w_repeller: float = 1.0,
        w_min_norm: float = 1.0,
    ):
        super().__init__()
        # The ranges above are declared with the registration and checked
        # by build_loss (and before any job), not here.
        if init_norm is None:
            init_norm = 0.5 * (min(margin, min_norm) if min_norm > 0 else margin)
        directions = torch.randn(num_classes, embedding_size)
        self.anchors = nn.Parameter(
            init_norm * directions / safe_norm(directions)[:, None]
        )
        self.margin = margin
        self.min_norm = min_norm
        self.reduction = reduction
        self.w_attractor = w_attractor
        self.w_repeller = w_repeller
        self.w_min_norm = w_min_norm

    def _reduce(self, values: torch.Tensor) -> torch.Tensor:
        return values.mean() if self.reduction == "mean" else values.sum()

    def attractor(self, embeddings, labels):
        return 0.5 * (embeddings - self.anchors[labels]).pow(2).sum(1).mean()

    def anchor_distances(self):
        """The C(C-1) ordered-pair distances ``||a_c - a_c'||``, row by row."""
        a = self.anchors
        return off_diagonal(pairwise_safe_distance(a, a))

    def repeller(self, distances=None):
        distances = self.anchor_distances() if distances is None else distances
        return self._reduce(0.5 * (2 * self.margin - distances).clamp_min(0).pow(2))

    def min_norm_term(self, norms=None):
        norms = safe_norm(self.anchors) if norms is None else norms
        return self._reduce((self.min_norm - norms).clamp_min(0))

    def forward(self, embeddings, labels):
        distances, norms = self.anchor_distances(), safe_norm(self.anchors)
        terms = {
            "attractor": self.w_attractor * self.attractor(embeddings, labels),
            "repeller": self.w_repeller * self.repeller(distances),
            "min_norm": self.w_min_norm * self.min_norm_term(norms),
        }
        # For the training curves: each term detached, weighted as it enters
        # L, and how many pairs and anchors the margin terms act on.
        self.last_terms = {name: value.detach() for name, value in terms.items()}
        self.last_diagnostics = {
            "pairs_within_margin": (distances.detach() < 2 * self.margin)
            .float()
            .mean(),
            "anchors_below_min_norm": (norms.detach() < self.min_norm).float().mean(),
        }
        return terms["attractor"] + terms["repeller"] + terms["min_norm"]

    def predict(self, embeddings):
        """Negative L2 distance to each anchor, shape (N, C)."""
        return -pairwise_safe_distance(embeddings, self.anchors)

    def class_anchors(self):
        """The anchors, shape (C, D), detached."""
        return self.anchors.detach()

"""Tests of the loss modules: hand-computed values, loop references,
gradients, edge cases of the CAM terms, toy optimisation and the registry."""

import math
import re

import pytest
import torch
import torch.nn.functional as F

from workflow.losses import LOSSES, build_loss
from workflow.losses.class_anchor_margin import ClassAnchorMarginLoss, off_diagonal
from workflow.losses.cross_entropy import CrossEntropyLoss
from workflow.losses.large_margin import LargeMarginLoss

OURS = ["ce", "cam", "lm"]


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


# ---------------------------------------------------------------- hand values


def test_ce_hand_computed():
    loss = CrossEntropyLoss(num_classes=2, embedding_size=2).double()
    with torch.no_grad():
        loss.classifier.weight.copy_(t([[1, 0], [0, 1]]))
        loss.classifier.bias.copy_(t([0.5, 0]))
    f = t([[1, 0], [0, 2]])  # logits [1.5, 0] and [0.5, 2]
    y = torch.tensor([0, 0])
    expected = (math.log(1 + math.exp(-1.5)) + math.log(1 + math.exp(1.5))) / 2
    assert loss(f, y).item() == pytest.approx(expected, rel=1e-12)
    assert torch.equal(loss.predict(f), t([[1.5, 0], [0.5, 2]]))


def test_cam_hand_computed():
    loss = ClassAnchorMarginLoss(
        num_classes=3,
        embedding_size=2,
        margin=1.0,
        min_norm=1.0,
        w_attractor=1.0,
        w_repeller=2.0,
        w_min_norm=3.0,
        reduction="sum",
    ).double()
    with torch.no_grad():
        loss.anchors.copy_(t([[0.5, 0], [2, 0], [0, 3]]))
    f = t([[1.5, 0], [2, 2]])
    y = torch.tensor([0, 1])
    # L_A: squared distances 1 and 4 -> mean(1/2 * 1, 1/2 * 4)
    l_a = (0.5 * 1 + 0.5 * 4) / 2
    # L_R: only |a0 - a1| = 1.5 < 2m = 2 (others are sqrt(9.25), sqrt(13));
    # two ordered pairs -> 1/2 * 2 * (2 - 1.5)^2
    l_r = 0.5 * 2 * (2 - 1.5) ** 2
    # L_N: norms 0.5, 2, 3 -> only (1 - 0.5)
    l_n = 1 - 0.5
    assert loss.attractor(f, y).item() == pytest.approx(l_a)
    assert loss.repeller().item() == pytest.approx(l_r)
    assert loss.min_norm_term().item() == pytest.approx(l_n)
    assert loss(f, y).item() == pytest.approx(1 * l_a + 2 * l_r + 3 * l_n)
    # predict: negative distance to each anchor
    expected = -t(
        [[1, 0.5, math.sqrt(1.5**2 + 9)], [math.sqrt(2.25 + 4), 2, math.sqrt(5)]]
    )
    assert torch.allclose(loss.predict(f), expected, atol=1e-6)


def test_lm_hand_computed():
    loss = LargeMarginLoss(num_classes=3, embedding_size=2, beta=0.5).double()
    with torch.no_grad():
        loss.classifier.weight.zero_()
        loss.classifier.bias.zero_()  # CE = log 3 for every sample
        loss.centres.copy_(t([[2, 0], [0, 3], [-0.5, 0]]))  # -> (1,0) (0,1) (-1,0)
    f = t([[3, 4], [0, -5]])  # normalised: (0.6, 0.8) and (0, -1)
    y = torch.tensor([0, 1])
    # sample 0: distances sqrt(0.8), sqrt(0.4), sqrt(3.2); own class 0
    lm0 = math.sqrt(0.8) - (math.sqrt(0.4) + math.sqrt(3.2)) / 2
    # sample 1: distances sqrt(2), 2, sqrt(2); own class 1
    lm1 = 2 - (math.sqrt(2) + math.sqrt(2)) / 2
    assert loss.margin_term(f, y).item() == pytest.approx(lm0 + lm1)
    assert loss(f, y).item() == pytest.approx(math.log(3) + 0.5 * (lm0 + lm1))
    assert torch.allclose(loss.class_anchors(), t([[1, 0], [0, 1], [-1, 0]]))


# ------------------------------------------------------ loop references


def dist(u, v):
    return ((u - v) ** 2).sum().sqrt()


def cam_loop(f, y, a, m, p, wa, wr, wn, reduction="sum"):
    n, c = len(f), len(a)
    l_a = sum(0.5 * ((f[i] - a[y[i]]) ** 2).sum() for i in range(n)) / n
    l_r = 0.5 * sum(
        torch.clamp(2 * m - dist(a[j], a[k]), min=0) ** 2
        for j in range(c)
        for k in range(c)
        if j != k
    )
    l_n = sum(torch.clamp(p - dist(a[j], 0 * a[j]), min=0) for j in range(c))
    if reduction == "mean":
        l_r, l_n = l_r / (c * (c - 1)), l_n / c
    return wa * l_a + wr * l_r + wn * l_n, l_r, l_n


def lm_loop(f, y, centres, w, b, beta):
    n, c = len(f), len(centres)
    ce = 0
    for i in range(n):
        z = [f[i] @ w[k] + b[k] for k in range(c)]
        ce = ce - torch.log(torch.exp(z[y[i]]) / sum(torch.exp(zk) for zk in z))
    ce = ce / n
    lm = 0
    for i in range(n):
        x = f[i] / dist(f[i], 0 * f[i])
        ch = [centres[k] / dist(centres[k], 0 * centres[k]) for k in range(c)]
        others = sum(dist(x, ch[k]) for k in range(c) if k != y[i])
        lm = lm + dist(x, ch[y[i]]) - others / (c - 1)
    return ce + beta * lm


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cam_matches_loop_values_and_gradients(reduction):
    torch.manual_seed(0)
    params = dict(
        margin=0.8, min_norm=1.2, w_attractor=0.7, w_repeller=1.3, w_min_norm=0.9
    )
    loss = ClassAnchorMarginLoss(
        num_classes=5, embedding_size=3, reduction=reduction, **params
    ).double()
    with torch.no_grad():
        loss.anchors.copy_(0.6 * torch.randn(5, 3, dtype=torch.float64))
    f = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (12,))

    ours = loss(f, y)
    ref, l_r, l_n = cam_loop(f, y, loss.anchors, *params.values(), reduction=reduction)
    assert l_r.item() > 0 and l_n.item() > 0  # all three terms are active
    assert torch.allclose(ours, ref)
    g_ours = torch.autograd.grad(ours, [f, loss.anchors])
    g_ref = torch.autograd.grad(ref, [f, loss.anchors])
    for a, b in zip(g_ours, g_ref):
        assert torch.allclose(a, b)


def test_lm_matches_loop_values_and_gradients():
    torch.manual_seed(1)
    loss = LargeMarginLoss(num_classes=4, embedding_size=5, beta=0.3).double()
    f = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (8,))
    w, b = loss.classifier.weight, loss.classifier.bias

    ours = loss(f, y)
    ref = lm_loop(f, y, loss.centres, w, b, 0.3)
    assert torch.allclose(ours, ref)
    inputs = [f, loss.centres, w, b]
    for a, b_ in zip(
        torch.autograd.grad(ours, inputs), torch.autograd.grad(ref, inputs)
    ):
        assert torch.allclose(a, b_)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", OURS)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(2)
    loss = build_loss(name, num_classes=4, embedding_size=6)
    params = dict(loss.named_parameters())
    assert params, "every loss here has learnable state"
    f = torch.randn(16, 6, requires_grad=True)
    y = torch.arange(16) % 4
    loss(f, y).backward()
    for pname, p in list(params.items()) + [("embeddings", f)]:
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


# ------------------------------------------------------- CAM's edge cases


def cam(anchors, **params):
    loss = ClassAnchorMarginLoss(
        num_classes=len(anchors), embedding_size=anchors.shape[1], **params
    )
    loss = loss.double()
    with torch.no_grad():
        loss.anchors.copy_(anchors)
    return loss


def test_cam_min_norm_pushes_small_anchors_out():
    torch.manual_seed(3)
    loss = cam(
        1e-3 * torch.randn(4, 3, dtype=torch.float64), min_norm=1.0, reduction="sum"
    )
    l_n = loss.min_norm_term()
    norms = loss.anchors.norm(dim=1)
    assert l_n.item() == pytest.approx((1.0 - norms).sum().item())
    assert l_n.item() > 3.9
    (grad,) = torch.autograd.grad(l_n, loss.anchors)
    assert torch.isfinite(grad).all()
    # a descent step along -grad increases every anchor's norm
    assert ((loss.anchors.detach() - 0.1 * grad).norm(dim=1) > norms.detach()).all()


def test_cam_min_norm_zero_for_large_anchors():
    a = 2.0 * F.normalize(torch.randn(4, 3, dtype=torch.float64), dim=1)
    assert cam(a, min_norm=1.0).min_norm_term().item() == 0.0


def test_cam_repeller_zero_when_anchors_far_apart():
    # pairwise distances sqrt(2) * 1.5 ~ 2.12 > 2m = 2
    loss = cam(1.5 * torch.eye(3, dtype=torch.float64), margin=1.0)
    assert loss.repeller().item() == 0.0
    # at 0.5 * sqrt(2) ~ 0.71 < 2 the repeller acts: 1/2 * 6 pairs * (2 - 0.71)^2
    loss = cam(0.5 * torch.eye(3, dtype=torch.float64), margin=1.0, reduction="sum")
    assert loss.repeller().item() == pytest.approx(3 * (2 - math.sqrt(0.5)) ** 2)
    # the default reduction is the mean over the 6 ordered pairs
    loss = cam(0.5 * torch.eye(3, dtype=torch.float64), margin=1.0)
    assert loss.repeller().item() == pytest.approx(0.5 * (2 - math.sqrt(0.5)) ** 2)


def test_cam_finite_gradient_when_anchors_coincide():
    a = t([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]])  # two equal anchors, one at zero
    loss = cam(a, margin=1.0, min_norm=1.0)
    f = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    value = loss(f, torch.tensor([0, 1, 2]))
    assert torch.isfinite(value)
    value.backward()
    assert torch.isfinite(loss.anchors.grad).all()
    assert torch.isfinite(f.grad).all()
    # coinciding pair contributes ~ (2m)^2 (the clamp moves it by ~1e-6)
    two = cam(a[:2], margin=1.0, reduction="sum")
    assert two.repeller().item() == pytest.approx(0.5 * 2 * 4, abs=1e-4)


def test_lm_finite_gradient_when_embedding_hits_centre():
    loss = LargeMarginLoss(num_classes=2, embedding_size=2).double()
    with torch.no_grad():
        loss.centres.copy_(t([[1, 0], [0, 1]]))
    f = t([[3, 0]]).requires_grad_()
    loss(f, torch.tensor([0])).backward()
    assert torch.isfinite(f.grad).all() and torch.isfinite(loss.centres.grad).all()


@pytest.mark.parametrize("embedding_size", [2, 32, 512])
@pytest.mark.parametrize("num_classes", [2, 10, 100])
def test_cam_default_constructor_starts_with_every_term_acting(
    num_classes, embedding_size
):
    # No hand-made anchors: the default initialisation itself must put every
    # anchor below p and every pair within 2m, whatever D and C, and each
    # term's gradient must reach the anchors.
    torch.manual_seed(8)
    loss = build_loss("cam", num_classes=num_classes, embedding_size=embedding_size)
    norms = loss.anchors.detach().norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 0.5))
    f = torch.randn(64, embedding_size)
    y = torch.arange(64) % num_classes
    loss(f, y)
    assert loss.last_diagnostics["pairs_within_margin"].item() == 1.0
    assert loss.last_diagnostics["anchors_below_min_norm"].item() == 1.0
    for term in [loss.attractor(f, y), loss.repeller(), loss.min_norm_term()]:
        assert term.item() > 0
        (grad,) = torch.autograd.grad(term, loss.anchors)
        assert grad.abs().sum() > 0


@pytest.mark.parametrize(
    "margin, min_norm",
    [(1.0, 1.0), (0.5, 0.5), (4.0, 1.0), (1.0, 0.2), (0.3, 2.0), (2.0, 0.0)],
)
def test_cam_default_initialisation_follows_margin_and_minimum_norm(margin, min_norm):
    # A sweep of m and p (config/fair_digits.yaml) must not start a term idle.
    torch.manual_seed(9)
    loss = build_loss(
        "cam", num_classes=20, embedding_size=16, margin=margin, min_norm=min_norm
    )
    loss(torch.randn(8, 16), torch.arange(8))
    assert loss.last_diagnostics["pairs_within_margin"].item() == 1.0
    expected_short = 1.0 if min_norm > 0 else 0.0
    assert loss.last_diagnostics["anchors_below_min_norm"].item() == expected_short
    assert loss.repeller().item() > 0
    if min_norm > 0:
        assert loss.min_norm_term().item() > 0


def test_cam_diagnostics_count_active_pairs_and_short_anchors():
    # distances: |a0 - a1| = 1.5 < 2 (2 of 6 ordered pairs); norms 0.5, 2, 3 (1 of 3 below p)
    loss = cam(t([[0.5, 0], [2, 0], [0, 3]]), margin=1.0, min_norm=1.0)
    loss(t([[0, 0]]), torch.tensor([0]))
    assert loss.last_diagnostics["pairs_within_margin"].item() == pytest.approx(2 / 6)
    assert loss.last_diagnostics["anchors_below_min_norm"].item() == pytest.approx(
        1 / 3
    )


@pytest.mark.parametrize(
    "params",
    [
        {"margin": -1.0},
        {"margin": 0.0},
        {"min_norm": -0.5},
        {"init_norm": 0.0},
        {"w_repeller": -1.0},
        {"reduction": "max"},
    ],
)
def test_cam_rejects_parameters_out_of_range(params):
    with pytest.raises(ValueError, match="cam"):
        build_loss("cam", num_classes=3, embedding_size=4, **params)


def test_cam_predict_and_anchors():
    loss = cam(t([[0, 0], [5, 0], [0, 5]]))
    f = t([[4, 1], [0.5, 0.2], [1, 4]])
    assert loss.predict(f).argmax(1).tolist() == [1, 0, 2]
    assert torch.equal(loss.class_anchors(), loss.anchors.detach())


# ----------------------------------------------------------- optimisation


@pytest.mark.parametrize("name", OURS)
def test_adam_lowers_loss_on_separable_toy(name):
    torch.manual_seed(4)
    centres = t([[3, 0], [-3, 3], [-3, -3]]).float()
    y = torch.arange(30) % 3
    f = (centres[y] + 0.5 * torch.randn(30, 2)).requires_grad_()
    loss = build_loss(name, num_classes=3, embedding_size=2)
    opt = torch.optim.Adam([f, *loss.parameters()], lr=0.05)
    values = []
    for _ in range(60):
        opt.zero_grad()
        value = loss(f, y)
        value.backward()
        opt.step()
        values.append(value.item())
    assert values[-1] < values[0] - 0.1 * abs(values[0])
    with torch.no_grad():
        accuracy = (loss.predict(f).argmax(1) == y).float().mean().item()
    assert accuracy == 1.0


# ---------------------------------------------------------------- registry


def test_registry_names():
    assert set(OURS) <= set(LOSSES.names())


def test_unknown_loss_raises_key_error_naming_known_ones():
    with pytest.raises(KeyError) as info:
        build_loss("no_such_loss", num_classes=3, embedding_size=4)
    message = info.value.args[0]
    assert "no_such_loss" in message
    known = message.split("registered: ")[1].split(", ")
    assert set(OURS) <= set(known)


@pytest.mark.parametrize(
    "name, cls",
    [("ce", CrossEntropyLoss), ("cam", ClassAnchorMarginLoss), ("lm", LargeMarginLoss)],
)
def test_build_with_defaults_and_interface(name, cls):
    loss = build_loss(name, num_classes=5, embedding_size=7)
    assert type(loss) is cls
    f = torch.randn(4, 7)
    assert loss(f, torch.tensor([0, 1, 2, 4])).dim() == 0
    assert loss.predict(f).shape == (4, 5)
    if name == "ce":
        assert not hasattr(loss, "class_anchors")
    else:
        assert loss.class_anchors().shape == (5, 7)


@pytest.mark.parametrize("name", LOSSES.names())
def test_registration_says_what_the_loss_has(name):
    """Issue 22: the code reads `anchors` and `classifies` from the
    registration, so each must match the class: a loss declared with
    anchors has class_anchors() -> (C, D), and one declared without has
    none; likewise `classifies` and predict() -> (N, C)."""
    from workflow.losses import loss_classifies, loss_has_anchors

    loss = build_loss(name, num_classes=5, embedding_size=7)
    assert loss_has_anchors(name) == hasattr(loss, "class_anchors"), name
    assert loss_classifies(name) == hasattr(loss, "predict"), name
    if loss_has_anchors(name):
        assert loss.class_anchors().shape == (5, 7)
    if loss_classifies(name):
        assert loss.predict(torch.randn(4, 7)).shape == (4, 5)


def test_a_loss_registered_without_anchors_or_classifies_is_refused():
    for missing in ["anchors", "classifies"]:
        metadata = {"geometry": "cosine", "anchors": False, "classifies": False}
        del metadata[missing]
        with pytest.raises(ValueError, match=f"{missing}="):
            LOSSES.register("undeclared", **metadata)


def test_no_code_probes_a_loss_for_its_methods():
    """The declarations are read instead (workflow.losses.loss_has_anchors,
    loss_classifies); only the test above looks at the classes. Nor for its
    terms: every loss has them (workflow.losses.base.Loss)."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    probe = re.compile(
        r"hasattr\([^)]*[\"'](predict|class_anchors)[\"']"
        r"|(get|has)attr\([^)]*[\"']last_(terms|diagnostics)[\"']"
    )
    files = [
        *(repo / "workflow").rglob("*.py"),
        *(repo / "rules").glob("*.smk"),
        *(repo / "benchmarks").glob("*.py"),
    ]
    found = [str(p.relative_to(repo)) for p in files if probe.search(p.read_text())]
    assert not found, found


# ------------------------------------------------- loss terms (training curves)


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_reports_its_terms_through_the_loss_interface(name):
    """Issue 28: training reads ``last_terms`` and ``last_diagnostics``,
    declared on workflow.losses.base.Loss, which every loss subclasses:
    empty until a loss reports parts, then detached 0-d tensors (the terms
    sum to the loss)."""
    from workflow.losses.base import Loss

    loss = build_loss(name, num_classes=4, embedding_size=7)
    assert isinstance(loss, Loss), name
    assert loss.last_terms == {} and loss.last_diagnostics == {}
    torch.manual_seed(0)
    value = loss(torch.randn(8, 7), torch.arange(8) % 4)  # two per class
    for part in (loss.last_terms, loss.last_diagnostics):
        assert isinstance(part, dict)
        assert all(v.dim() == 0 and not v.requires_grad for v in part.values())
    if loss.last_terms:
        total = sum(loss.last_terms.values())
        assert torch.allclose(total, value.detach(), atol=1e-5), name


def test_cam_terms_match_loop_and_sum_to_loss():
    torch.manual_seed(5)
    params = dict(
        margin=0.8, min_norm=1.2, w_attractor=0.7, w_repeller=1.3, w_min_norm=0.9
    )
    loss = ClassAnchorMarginLoss(
        num_classes=5, embedding_size=3, reduction="sum", **params
    ).double()
    with torch.no_grad():
        loss.anchors.copy_(0.6 * torch.randn(5, 3, dtype=torch.float64))
    f = torch.randn(12, 3, dtype=torch.float64)
    y = torch.randint(0, 5, (12,))
    total = loss(f, y)
    _, l_r, l_n = cam_loop(f, y, loss.anchors, *params.values())
    l_a = sum(0.5 * ((f[i] - loss.anchors[y[i]]) ** 2).sum() for i in range(12)) / 12
    terms = loss.last_terms
    assert list(terms) == ["attractor", "repeller", "min_norm"]
    assert all(v.dim() == 0 and not v.requires_grad for v in terms.values())
    assert torch.allclose(terms["attractor"], 0.7 * l_a)
    assert torch.allclose(terms["repeller"], 1.3 * l_r) and l_r > 0
    assert torch.allclose(terms["min_norm"], 0.9 * l_n) and l_n > 0
    assert torch.allclose(sum(terms.values()), total)


def test_lm_terms_match_loop_and_sum_to_loss():
    torch.manual_seed(6)
    loss = LargeMarginLoss(num_classes=4, embedding_size=5, beta=0.3).double()
    f = torch.randn(8, 5, dtype=torch.float64)
    y = torch.randint(0, 4, (8,))
    w, b = loss.classifier.weight, loss.classifier.bias
    total = loss(f, y)
    ce = lm_loop(f, y, loss.centres, w, b, 0.0)  # beta 0: the CE part alone
    terms = loss.last_terms
    assert list(terms) == ["ce", "lm"]
    assert torch.allclose(terms["ce"], ce)
    assert torch.allclose(terms["lm"], lm_loop(f, y, loss.centres, w, b, 0.3) - ce)
    assert torch.allclose(sum(terms.values()), total)


def test_center_and_island_terms_match_formulas_and_sum_to_loss():
    torch.manual_seed(7)
    f = torch.randn(10, 4, dtype=torch.float64)
    y = torch.arange(10) % 3
    center = build_loss(
        "center", num_classes=3, embedding_size=4, lambda_c=0.2
    ).double()
    total = center(f, y)
    ce = F.cross_entropy(center.classifier(f), y)
    l_c = sum(0.5 * ((f[i] - center.centres[y[i]]) ** 2).sum() for i in range(10)) / 10
    assert list(center.last_terms) == ["ce", "center"]
    assert torch.allclose(center.last_terms["ce"], ce)
    assert torch.allclose(center.last_terms["center"], 0.2 * l_c)
    assert torch.allclose(sum(center.last_terms.values()), total)

    island = build_loss(
        "island", num_classes=3, embedding_size=4, lambda_il=0.5, lambda_1=2.0
    ).double()
    total = island(f, y)
    c = island.centres
    pairs = sum(
        (c[j] @ c[k]) / (c[j].norm() * c[k].norm()) + 1
        for j in range(3)
        for k in range(3)
        if j != k
    )
    l_c = sum(0.5 * ((f[i] - c[y[i]]) ** 2).sum() for i in range(10)) / 10
    terms = island.last_terms
    assert list(terms) == ["ce", "center", "island_pairs"]
    assert torch.allclose(terms["ce"], F.cross_entropy(island.classifier(f), y))
    assert torch.allclose(terms["center"], 0.5 * l_c)
    assert torch.allclose(terms["island_pairs"], 0.5 * 2.0 * pairs)
    assert torch.allclose(sum(terms.values()), total)


# ---------------------------------------------------------------- compile


@pytest.mark.parametrize("n", [1, 2, 7])
def test_off_diagonal_gives_what_a_boolean_mask_gives_bit_for_bit(n):
    m = torch.randn(n, n, requires_grad=True)
    mask = ~torch.eye(n, dtype=torch.bool)
    assert torch.equal(off_diagonal(m), m[mask])
    weights = torch.randn(n * (n - 1))
    (grad,) = torch.autograd.grad((off_diagonal(m) * weights).sum(), m)
    (mask_grad,) = torch.autograd.grad((m[mask] * weights).sum(), m)
    assert torch.equal(grad, mask_grad)


@pytest.mark.parametrize("name", ["ce", "cam", "lm", "center", "island"])
def test_the_papers_losses_compile_to_one_graph(name):
    """No graph break (boolean masks, data-dependent branches) in the
    losses this project implements, so `training.compile: reduce-overhead`
    captures backbone and loss in one CUDA graph. (The pytorch-metric-
    learning losses mine pairs with data-dependent shapes and do break.)"""
    torch._dynamo.reset()
    loss = build_loss(name, num_classes=10, embedding_size=16)
    explanation = torch._dynamo.explain(loss)(
        torch.randn(32, 16, requires_grad=True), torch.arange(32) % 10
    )
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_registering_a_loss_that_is_no_loss_subclass_names_it():
    """Training reads every loss's terms through the Loss interface, so a
    plain nn.Module is refused where it is registered, by name."""
    from torch import nn

    from workflow.losses import LOSSES, register_loss

    with pytest.raises(TypeError, match="loss 'plain'.*must subclass"):

        @register_loss("plain", geometry="euclidean", anchors=False, classifies=False)
        class Plain(nn.Module):
            def forward(self, embeddings, labels):
                return embeddings.sum()

    assert "plain" not in LOSSES.names()

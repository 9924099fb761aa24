"""Loss functions, one file each, registered by name.

Every loss is a :class:`workflow.losses.base.Loss` (an ``nn.Module``) built as
``cls(num_classes=..., embedding_size=..., **params)`` and called as
``loss(embeddings, labels) -> scalar``; after each call it reports its
weighted parts in ``last_terms`` and its measurements in
``last_diagnostics`` (both empty unless it has some), which training
averages per epoch. Learnable state (anchors, centres, classifier weights)
is an ordinary ``nn.Parameter`` so the optimiser and the checkpoint include
it. Two optional methods, each declared in the loss's registration (the
code reads the declaration, never probes the class; a test checks that
they agree):

- ``predict(embeddings) -> (N, C) scores``: class scores for ``accuracy``;
  declared with ``classifies=True``;
- ``class_anchors() -> (C, D) tensor``: learned anchors or class centres in
  the embedding space (exported next to the embeddings, drawn in the
  anchor figure, used by two-stage retrieval); declared with ``anchors=True``.

Losses that do not classify (contrastive, triplet, supcon) get their
``accuracy`` from the nearest exported anchor, or NaN when they have none.
Per loss, the config may set class-balanced batches (``sampler``, see
``workflow/samplers.py``; pair, triplet and SupCon losses need them) and a
learning-rate multiplier for the loss's own parameters (``lr_multiplier``).
A loss may ship defaults, declared in its registration
(``shipped={"lr_multiplier": ShippedDefault(value, source),
"params.margin": ShippedDefault(...)}``: the paper's or its official code's
value where one is published, else ours, with the reason): a config entry
that leaves such a key out gets the shipped value; ``lr_multiplier`` is 1
where none is declared, a parameter without one takes the class's default.

Add a loss: a new module here with a subclass of ``Loss`` under
``@register_loss("name", geometry=..., anchors=..., classifies=...,
params={...})`` (``geometry``: ``euclidean`` or ``cosine``, see below;
``anchors``, ``classifies``: true or false, see above; ``params``: the
range of each parameter, e.g. ``{"margin": Number(gt=0)}``, see
``workflow/registry.py``), plus one entry under ``losses:`` in the config.
Use pytorch-metric-learning for what it provides (see ``contrastive.py``,
``arcface.py``).
"""

from dataclasses import dataclass

from workflow.geometry import DISTANCES as GEOMETRIES
from workflow.losses.base import Loss
from workflow.registry import Registry

# A loss's geometry: the distance its training shapes the embedding for,
# and so the one it is retrieved by (``evaluation.distances``: ``own``).
# ``cosine`` for losses that compare L2-normalised embeddings (or cosines),
# ``euclidean`` for those on raw embeddings.
LOSSES = Registry(
    "loss",
    __name__,
    required={
        "geometry": GEOMETRIES,
        "anchors": (True, False),
        "classifies": (True, False),
    },
)


def register_loss(name: str, **metadata):
    """``LOSSES.register`` for a subclass of :class:`Loss` (the interface
    training reads a loss's terms through); anything else is named."""
    register = LOSSES.register(name, **metadata)

    def check(cls):
        if not (isinstance(cls, type) and issubclass(cls, Loss)):
            raise TypeError(
                f"loss {name!r}: {getattr(cls, '__name__', cls)!r} must subclass "
                "workflow.losses.base.Loss (class MyLoss(Loss): ...; see docs/losses.md)"
            )
        return register(cls)

    return check


def loss_geometry(impl: str) -> str:
    return LOSSES.metadata(impl)["geometry"]


def loss_has_anchors(impl: str) -> bool:
    """Whether loss ``impl`` learns class anchors (``class_anchors()``)."""
    return LOSSES.metadata(impl)["anchors"]


def loss_classifies(impl: str) -> bool:
    """Whether loss ``impl`` scores classes (``predict()``)."""
    return LOSSES.metadata(impl)["classifies"]


@dataclass(frozen=True)
class ShippedDefault:
    """A value a user gets without setting it, and where it comes from."""

    value: float | str
    source: str


def shipped_defaults(impl: str) -> dict[str, ShippedDefault]:
    """What loss ``impl`` trains with where its config entry leaves a key
    out: ``lr_multiplier`` (always; 1 unless its registration's ``shipped``
    declares one) and each ``params.<name>`` its registration declares."""
    shipped = dict(LOSSES.metadata(impl).get("shipped") or {})
    shipped.setdefault(
        "lr_multiplier", ShippedDefault(1.0, "the backbone's learning rate")
    )
    return shipped


def loss_has_parameters(impl: str) -> bool:
    """Whether loss ``impl`` learns parameters of its own (anchors,
    proxies, centres, class weights), which ``lr_multiplier`` scales: read
    from a small instance's ``parameters()``, the module's own interface."""
    return any(
        True for _ in LOSSES.get(impl)(num_classes=3, embedding_size=4).parameters()
    )


def build_loss(impl: str, num_classes: int, embedding_size: int, **params):
    """The loss ``impl`` with ``params``, after checking them against its
    declared ranges (:meth:`workflow.registry.Registry.check_params`)."""
    LOSSES.check_params(impl, params)
    return LOSSES.get(impl)(
        num_classes=num_classes, embedding_size=embedding_size, **params
    )

"""Batches of training indices: plain shuffled passes or class-balanced
batches of m images per class.

Both draw every random number from one ``torch.Generator``, so the same
seed gives the same batches on any machine (pytorch-metric-learning's
``MPerClassSampler`` draws from NumPy's global generator and picks images
with replacement, so it is not used).
"""

from __future__ import annotations

from collections import deque

import torch


def shuffled_batches(
    n: int, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """A shuffled pass in batches; a last batch of one image joins the one
    before (batch norm needs two)."""
    order = torch.randperm(n, generator=generator)
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) < 2:
        chunks[-2] = torch.cat(chunks[-2:])
        chunks.pop()
    return chunks


class ShuffledBatches:
    """Every epoch one shuffled pass over all n images (the default)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        self.n, self.batch_size, self.generator = n, batch_size, generator

    def epoch(self) -> list[torch.Tensor]:
        return shuffled_batches(self.n, self.batch_size, self.generator)

    # No state beyond the generator's (which the training loop saves).
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class _Cycle:
    """Endless draws from ``items``: a random permutation, then another, ...
    Every item comes once per permutation, so draws cover all items evenly."""

    def __init__(self, items: torch.Tensor, generator: torch.Generator):
        self.items, self.generator = items, generator
        self.queue: deque[int] = deque()

    def take(self, count: int) -> list[int]:
        """``count`` draws, distinct when ``count <= len(items)``: items
        already drawn go to the end of a fresh permutation."""
        taken: list[int] = []
        while len(taken) < count:
            if not self.queue:
                order = self.items[
                    torch.randperm(len(self.items), generator=self.generator)
                ].tolist()
                seen = set(taken)
                self.queue = deque(
                    [i for i in order if i not in seen]
                    + [i for i in order if i in seen]
                )
            taken.append(self.queue.popleft())
        return taken

    def state_dict(self) -> list[int]:
        """The draws left in the current permutation (what a resume needs
        besides the generator's state)."""
        return list(self.queue)

    def load_state_dict(self, queue: list[int]) -> None:
        self.queue = deque(int(i) for i in queue)


class MPerClassBatches:
    """Class-balanced batches: ``batch_size / m`` distinct classes per batch
    and ``m`` images of each.

    Classes are taken in turn from successive random permutations of the
    classes, and each class's images from successive random permutations of
    that class, so every class and every image comes up equally often over
    time (a class with fewer than m images repeats some within a batch).
    An epoch has ``ceil(n / batch_size)`` batches, the number of steps of a
    plain shuffled pass; with balanced classes it shows every image once.
    The streams carry over from one epoch to the next.

    Args:
        labels: (n,) class of each training image (any integers).
        m: images per class in a batch; must divide ``batch_size``.
        batch_size: images per batch.
        generator: the source of every random draw.
        key: config key named in error messages.
    """

    def __init__(
        self,
        labels: torch.Tensor,
        m: int,
        batch_size: int,
        generator: torch.Generator,
        key: str = "sampler.m_per_class",
    ):
        labels = torch.as_tensor(labels).cpu()
        classes = torch.unique(labels)
        if m < 1 or batch_size % m:
            raise ValueError(
                f"{key} = {m} must divide training.batch_size = {batch_size}; "
                "change one of them"
            )
        self.classes_per_batch = batch_size // m
        if self.classes_per_batch > len(classes):
            raise ValueError(
                f"{key} = {m} with training.batch_size = {batch_size} needs "
                f"{self.classes_per_batch} classes per batch, but the training set has "
                f"{len(classes)}; raise m_per_class to at least "
                f"{-(-batch_size // len(classes))} (dividing the batch size) or lower the batch size"
            )
        self.m = m
        self.num_batches = -(-len(labels) // batch_size)
        self.class_cycle = _Cycle(classes, generator)
        self.image_cycles = {
            int(c): _Cycle(torch.nonzero(labels == c).flatten(), generator)
            for c in classes
        }

    def epoch(self) -> list[torch.Tensor]:
        batches = []
        for _ in range(self.num_batches):
            chosen = self.class_cycle.take(self.classes_per_batch)
            batches.append(
                torch.tensor(
                    [i for c in chosen for i in self.image_cycles[c].take(self.m)]
                )
            )
        return batches

    def state_dict(self) -> dict:
        """Queues of the class and image streams, which carry over between
        epochs; with the generator's state they fix every later batch."""
        return {
            "classes": self.class_cycle.state_dict(),
            "images": {c: cycle.state_dict() for c, cycle in self.image_cycles.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.class_cycle.load_state_dict(state["classes"])
        for c, queue in state["images"].items():
            self.image_cycles[int(c)].load_state_dict(queue)


def make_batches(
    labels: torch.Tensor,
    batch_size: int,
    sampler: dict | None,
    generator: torch.Generator,
    key: str = "sampler",
):
    """The batch source of a cell: ``sampler`` is ``None`` (shuffled passes)
    or ``{"m_per_class": m}`` (class-balanced batches)."""
    if not sampler:
        return ShuffledBatches(len(labels), batch_size, generator)
    return MPerClassBatches(
        labels, sampler["m_per_class"], batch_size, generator, key=f"{key}.m_per_class"
    )

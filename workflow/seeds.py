"""The random streams of a seed, in one place.

Every random decision of a cell draws from its own stream, derived from
``(seed, stream number)`` by NumPy's ``SeedSequence``, so that no two draw
from the same sequence (seeding two generators with the same integer would
make, for example, the initial weights and the first epoch's batch order
two reads of one random sequence) and adding draws to one stream never
shifts another:

===================  ==========================================================
stream               what draws from it
===================  ==========================================================
``evaluation_split``  query and database images (``workflow.splits``); depends
                      on (dataset, seed) only
``training_split``    the regime's training images (``workflow.splits``)
``validation_split``  the validation split of ``selection``
``init``              weight and loss-parameter initialisation (the global
                      torch, NumPy and Python generators at the start of
                      training; whatever else draws from those during
                      training continues this stream)
``batches``           batch order and class-balanced sampling
``augment``           data augmentation (on the training device)
===================  ==========================================================

A stream's number is part of the results: never renumber one.
"""

from __future__ import annotations

import numpy as np

STREAMS = {
    "evaluation_split": 0,
    "training_split": 1,
    "validation_split": 2,
    "init": 3,
    "batches": 4,
    "augment": 5,
}


def stream_entropy(seed: int, stream: str, *more: int) -> list[int]:
    """The ``SeedSequence`` entropy of a stream (``more``: sub-streams, e.g.
    one per class)."""
    if stream not in STREAMS:
        raise KeyError(
            f"unknown random stream {stream!r}; streams: {', '.join(STREAMS)}"
        )
    return [int(seed), STREAMS[stream], *map(int, more)]


def stream_rng(seed: int, stream: str, *more: int) -> np.random.Generator:
    """A NumPy generator of the stream."""
    return np.random.default_rng(stream_entropy(seed, stream, *more))


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit integer seed of the stream, for ``torch.Generator.manual_seed``
    and the global generators."""
    state = np.random.SeedSequence(stream_entropy(seed, stream)).generate_state(
        2, np.uint32
    )
    return int((int(state[0]) << 31) ^ int(state[1]))

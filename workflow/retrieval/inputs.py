"""Search inputs: queries and database checked, coded and placed on a device.

Shared by exact (:mod:`workflow.retrieval.exact`) and two-stage
(:mod:`workflow.retrieval.two_stage`) search.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from workflow.retrieval.kernel import squared_norms

__all__ = [
    "Prepared",
    "as_embeddings",
    "as_labels",
    "check_chunk_size",
    "default_device",
    "prepare",
    "queries_without_positives",
]


def default_device(device) -> torch.device:
    if device is None:  # never a device the caller did not ask for
        return torch.device("cpu")
    return torch.device(device)


def as_labels(labels, name: str) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {labels.shape}")
    return labels


def as_embeddings(emb, name: str) -> torch.Tensor:
    if isinstance(emb, torch.Tensor):
        t = emb.detach()
    else:
        t = torch.from_numpy(np.ascontiguousarray(np.asarray(emb), dtype=np.float32))
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {tuple(t.shape)}")
    return t


@dataclass
class Prepared:
    """Queries and database checked, coded and placed on the device."""

    query_emb: torch.Tensor  # (Q, D), where the caller had it; moved per chunk
    query_codes: np.ndarray  # (Q,) int64 class codes
    db_emb: torch.Tensor  # (N, D) float32 on device
    db_sq: torch.Tensor  # (N,) float32 on device, ||b||^2
    db_codes: torch.Tensor  # (N,) int64 class codes on device
    n_pos: np.ndarray  # (Q,) int64: R, the number of positives of each query
    # (n_classes, max R) int64 on device: each class's database indices in
    # ascending order, padded with -1.
    class_items: torch.Tensor
    device: torch.device
    # All against all: the queries are the database (query i is database
    # item i), each query ranked against the others, itself excluded.
    all_against_all: bool = False

    @property
    def n_queries(self) -> int:
        return len(self.query_codes)

    @property
    def n_db(self) -> int:
        return len(self.db_codes)

    @property
    def n_ranked(self) -> int:
        """Items ranked for each query: the database, less the query itself
        when all against all."""
        return self.n_db - int(self.all_against_all)

    @property
    def has_positives(self) -> np.ndarray:
        return self.n_pos > 0


def prepare(
    query_emb, query_labels, db_emb=None, db_labels=None, device=None
) -> Prepared:
    """Check shapes and values, code the labels, move the database to
    ``device``. Without ``db_emb`` and ``db_labels``: all against all (as
    pytorch-metric-learning's ``get_accuracy`` without a reference): every
    query is ranked against all the others, itself excluded, and its
    positives are the other items of its class."""
    device = default_device(device)
    all_against_all = db_emb is None and db_labels is None
    if (db_emb is None) != (db_labels is None):
        raise ValueError("give both db_emb and db_labels, or neither (all against all)")
    q = as_embeddings(query_emb, "query_emb")
    db = q if all_against_all else as_embeddings(db_emb, "db_emb")
    ql = as_labels(query_labels, "query_labels")
    dl = ql if all_against_all else as_labels(db_labels, "db_labels")
    if len(q) != len(ql):
        raise ValueError(f"{len(q)} query embeddings but {len(ql)} query labels")
    if len(db) != len(dl):
        raise ValueError(f"{len(db)} database embeddings but {len(dl)} database labels")
    if len(q) == 0 or len(db) == 0:
        raise ValueError("need at least one query and one database item")
    if q.shape[1] != db.shape[1]:
        raise ValueError(
            f"query and database dimensions differ: {q.shape[1]} vs {db.shape[1]}"
        )

    # Class codes 0..C-1 shared by queries and database (labels may be any
    # sortable type, strings included).
    _, codes = np.unique(np.concatenate([ql, dl]), return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    q_codes, d_codes = codes[: len(ql)], codes[len(ql) :]
    n_classes = int(codes.max()) + 1
    class_sizes = np.bincount(d_codes, minlength=n_classes)
    n_pos = class_sizes[q_codes].astype(np.int64) - int(all_against_all)
    if not (n_pos > 0).any():
        raise ValueError(
            f"none of the {len(ql)} queries has a class with "
            + (
                "another item: every class has a single item"
                if all_against_all
                else "an item in the database"
            )
            + ": no retrieval metric is defined"
        )

    # Each class's database indices, ascending (a stable argsort by class).
    by_class = np.argsort(d_codes, kind="stable")
    width = max(int(class_sizes.max()), 1)
    class_items = np.full((n_classes, width), -1, dtype=np.int64)
    starts = np.cumsum(class_sizes) - class_sizes
    column = np.arange(len(d_codes)) - starts[d_codes[by_class]]
    class_items[d_codes[by_class], column] = by_class

    db = db.to(device=device, dtype=torch.float32)
    db_sq = squared_norms(db)
    # (A NaN or infinity anywhere in a row makes its squared norm one.)
    if not torch.isfinite(db_sq).all():
        raise ValueError(
            "db_emb contains NaN or infinite values (or values so large that "
            "their squared norm overflows float32)"
        )
    return Prepared(
        query_emb=q,
        query_codes=q_codes,
        db_emb=db,
        db_sq=db_sq,
        db_codes=torch.from_numpy(d_codes).to(device),
        n_pos=n_pos,
        class_items=torch.from_numpy(class_items).to(device),
        device=device,
        all_against_all=all_against_all,
    )


def queries_without_positives(query_labels, db_labels=None) -> int:
    """Number of queries whose class has no item in the database (left out of
    every metric, see :mod:`workflow.retrieval`); without ``db_labels`` (all
    against all), whose class has no other item."""
    ql = as_labels(query_labels, "query_labels")
    if db_labels is None:
        _, inverse, counts = np.unique(ql, return_inverse=True, return_counts=True)
        return int((counts[inverse.reshape(-1)] == 1).sum())
    dl = as_labels(db_labels, "db_labels")
    return int((~np.isin(ql, dl)).sum())


def check_chunk_size(chunk_size) -> int:
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)

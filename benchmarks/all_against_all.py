"""All-against-all evaluation benchmark (issue 21): time and peak memory
beside faiss's k-NN, side by side, one run.

On SOP-like synthetic embeddings (N test images, d dimensions, float32,
classes of 2 to 12 images as Stanford Online Products' test set, 60,502
images in 11,316 classes: class centres from a standard normal, items =
centre + ``NOISE`` x standard normal noise), each method in its own fresh
process (as ``benchmarks/retrieval.py``, whose helpers it uses):

``exact``
    the project's all-against-all evaluation, every test image a query
    against all the others, itself excluded, with SOP's metrics: recall@1,
    10, 100, 1000, top1/top5 error, map, map@r, r_precision, pr_auc and the
    PR curve (``workflow.retrieval.exact.evaluate_retrieval`` without a
    database, ``chunk_size`` 1024);
``faiss_top{k}``
    faiss-cpu ``IndexFlatL2`` of the N images searched with themselves for
    their k nearest neighbours alone (k = 1,001: Recall@1000 and the image
    itself; and k = 13: the largest class, what MAP@R needs); building the
    index is timed apart.

    python benchmarks/all_against_all.py                 # N=20,000, d=512
    python benchmarks/all_against_all.py --images 60502  # SOP's size
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval import (  # noqa: E402
    Report,
    cpu_name,
    cpu_seconds,
    faiss_knn,
    peak_mb,
    run_rounds,
    timed,
    versions,
)

NOISE, SEED = 2.5, 0
SIZES = (2, 12)  # class sizes, uniform (SOP's test set: 2 to 12, mean 5.3)
EVALUATION = {
    "recall_at": [1, 10, 100, 1000],
    "precision_at": [],
    "top_k_error": [1, 5],
}
TARGETS = {"exact_vs_faiss": 1.2, "exact_peak_gb": 2.0}


def make_data(folder: Path, n: int, dim: int) -> None:
    rng = np.random.default_rng(SEED)
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(SIZES[0], SIZES[1] + 1)))
    sizes[-1] -= sum(sizes) - n
    if sizes[-1] < SIZES[0]:
        sizes[-2] += sizes.pop()
    labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    centres = rng.standard_normal((len(sizes), dim), dtype=np.float32)
    emb = centres[labels] + NOISE * rng.standard_normal((n, dim), dtype=np.float32)
    np.save(folder / "emb.npy", emb)
    np.save(folder / "labels.npy", labels)


def worker(method: str, folder: Path, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    emb = np.load(folder / "emb.npy")
    labels = np.load(folder / "labels.npy")
    out = {}
    if method.startswith("faiss_top"):
        base, cpu, seconds, out["index_seconds"] = faiss_knn(
            emb, emb, int(method.removeprefix("faiss_top")), threads
        )
    elif method in ("exact", "exact_cuda"):
        # exact_cuda: the same evaluation ranked on a GPU (evaluation.device: cuda).
        from workflow.retrieval.exact import evaluate_retrieval

        device = "cuda" if method == "exact_cuda" else "cpu"
        if device == "cuda":
            torch.zeros(1, device="cuda")  # CUDA context outside the timing
        base, cpu, seconds, (out["metrics"], _) = timed(
            lambda: evaluate_retrieval(
                emb, labels, evaluation=EVALUATION, chunk_size=1024, device=device
            )
        )
        if device == "cuda":
            out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        raise SystemExit(f"unknown method {method}")
    out.update(
        method=method,
        seconds=seconds,
        cpu_seconds=cpu_seconds() - cpu,
        base_mb=base,
        peak_mb=peak_mb(),
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--methods", default="faiss_top1001,faiss_top13,exact")
    parser.add_argument(
        "--output", type=Path, default=None, help="also write the report here"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.threads)))
        return
    methods = args.methods.split(",")
    say = Report()
    say(f"# All-against-all benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
    say(
        f"device: {cpu_name()}, {args.threads} threads of {os.cpu_count()} CPUs, OMP_WAIT_POLICY=passive; no GPU"
    )
    say(f"versions: {versions()}")
    say(
        f"data: N={args.images:,} test images, each a query against the other N-1, d={args.dim}, float32, "
        f"classes of {SIZES[0]}-{SIZES[1]} images (centre + {NOISE} x N(0, I)), seed {SEED}"
    )
    say(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_data(folder, args.images, args.dim)
        runs = run_rounds(
            methods, folder, args.threads, "passive", args.rounds, say, script=__file__
        )
    say()
    say(
        f"{'method':15s} {'seconds':>9s} {'cpu s':>8s} {'base MB':>8s} {'peak MB':>8s}  metrics"
    )
    summary = {}
    for m in methods:
        seconds = statistics.median(r["seconds"] for r in runs[m])
        peak = max(r["peak_mb"] for r in runs[m])
        summary[m] = dict(
            seconds=seconds,
            peak=peak,
            cpu=statistics.median(r["cpu_seconds"] for r in runs[m]),
        )
        metrics = runs[m][0].get("metrics", {})
        shown = ", ".join(
            f"{k}={v:.4f}"
            for k, v in metrics.items()
            if k.startswith("recall@") or k == "map@r"
        )
        say(
            f"{m:15s} {seconds:9.2f} {statistics.median(r['cpu_seconds'] for r in runs[m]):8.2f} "
            f"{max(r['base_mb'] for r in runs[m]):8.0f} {peak:8.0f}  {shown}"
        )
    say()
    if "exact" in summary:
        for m in [m for m in methods if m.startswith("faiss_top")]:
            ratio = summary["exact"]["seconds"] / summary[m]["seconds"]
            say(
                f"  exact (all metrics) / {m} search time: {ratio:.2f} [<= {TARGETS['exact_vs_faiss']}] "
                f"{'met' if ratio <= TARGETS['exact_vs_faiss'] else 'MISSED'}; CPU seconds: "
                f"{summary['exact']['cpu'] / summary[m]['cpu']:.2f} (less sensitive to other load)"
            )
        gb = summary["exact"]["peak"] / 1024
        say(
            f"  exact peak memory: {gb:.2f} GB [< {TARGETS['exact_peak_gb']}] "
            f"{'met' if gb < TARGETS['exact_peak_gb'] else 'MISSED'}"
        )
    say.write(args.output)


if __name__ == "__main__":
    main()

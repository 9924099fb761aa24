"""Retrieval engine benchmark: time and peak memory, side by side, one run.

On the same clustered synthetic embeddings (Q queries, N database items,
d dimensions, float32, 100 classes: class centres from a standard normal,
items = centre + ``NOISE`` x standard normal noise), each in its own fresh
process:

``exact``
    the project's exact evaluation with every metric (precision@1/5/10,
    top1/top5 error, map, map@r, r_precision, pr_auc and the PR curve):
    ``workflow.retrieval.exact.evaluate_retrieval`` with the pipeline's default
    ``chunk_size`` 1024;
``faiss_top1000``
    faiss-cpu ``IndexFlatL2``: the search for the 1,000 nearest neighbours
    alone (building the index, a copy of the database, is timed apart);
``pml``
    pytorch-metric-learning's ``AccuracyCalculator`` with its retrieval
    metrics (precision_at_1, r_precision, mean_average_precision_at_r,
    mean_average_precision), ``k="max_bin_count"`` and its default k-NN
    (faiss ``IndexFlatL2``);
``two_stage_c{c}``
    two-stage retrieval with the class centres as anchors (what a trained
    CAM loss provides), ``rest="cut"``, every metric: the search and the
    metrics (index building, the assignment of the database to the anchors,
    is timed apart).

Time: wall seconds of the call, after the data are loaded. Peak memory: the
process's peak resident set size (``ru_maxrss``), which includes the
Python/torch runtime and the loaded data (given apart as "base"). Every
process runs with ``--threads`` CPU threads (torch, OpenMP/MKL and faiss)
and, by default, ``OMP_WAIT_POLICY=passive``, for all methods alike: on a
machine shared with other jobs, OpenMP's default busy-waiting makes each
parallel region wait for a thread whose core was taken away, which
multiplied the time of torch's many small operations by up to 10 here
(faiss's few large regions suffer less); ``--wait-policy active`` measures
the default instead.
Methods run in ``--rounds`` interleaved rounds (the median time is
reported), so that load changes on a shared machine hit all alike; the load
average is recorded.

Targets (2 CPU cores): exact evaluation within 1.5x of faiss's top-1000
search time, exact's peak memory under 2 GB, two-stage with c = 1 at least
5x faster than exact.

    python benchmarks/retrieval.py            # Q=10,000, N=100,000, d=512
    python benchmarks/retrieval.py --small    # Q=1,000, N=10,000: a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CLASSES, NOISE, SEED = 100, 2.5, 0
TWO_STAGE = (1, 2, 5)
EVALUATION = {"precision_at": [1, 5, 10], "top_k_error": [1, 5]}
TARGETS = {"exact_vs_faiss": 1.5, "exact_peak_gb": 2.0, "speedup_c1": 5.0}
NOTES = [
    "notes: seconds = median wall time over the rounds of the timed call (exact, pml,",
    "two-stage: all metrics; faiss: the top-1000 search alone); cpu s = CPU seconds of",
    "all threads over that call (for two-stage including its index building); index s =",
    "building the index apart (faiss add; two-stage: assigning the database to the",
    "anchors), not in seconds. base MB = peak RSS after imports and loading the data",
    "(the same for all); peak MB = the process's peak RSS. pml uses faiss for its",
    "k-NN (k = the largest class size) and computes its mean_average_precision over",
    "those k only, hence lower than our map over the full ranking; its map@r and",
    "r_precision equal ours. Two-stage uses the true class centres as anchors: in 512",
    "dimensions the nearest centre finds the class of nearly every item and query, so",
    "c = 1 retrieves the whole class first and scores higher than exact retrieval here.",
]


def make_data(folder: Path, n_queries: int, n_db: int, dim: int) -> None:
    rng = np.random.default_rng(SEED)
    centres = rng.standard_normal((CLASSES, dim), dtype=np.float32)
    for name, n in [("query", n_queries), ("db", n_db)]:
        labels = rng.integers(0, CLASSES, n)
        emb = centres[labels] + NOISE * rng.standard_normal((n, dim), dtype=np.float32)
        np.save(folder / f"{name}_emb.npy", emb)
        np.save(folder / f"{name}_labels.npy", labels)
    np.save(folder / "centres.npy", centres)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime  # all threads of this process


def timed(call):
    """Run ``call()``; return (base MB, CPU seconds before the call, wall
    seconds of the call, its result)."""
    base = peak_mb()
    cpu = cpu_seconds()
    began = time.perf_counter()
    result = call()
    return base, cpu, time.perf_counter() - began, result


class Report(list):
    """The report's lines: each printed as it comes, and kept for ``write``."""

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.append(text)

    def write(self, output: Path | None) -> None:
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text("\n".join(self) + "\n")
            print(f"\nwritten to {output}")


# ---------------------------------------------------------------------------
# One method in this process (run by the parent as a subprocess)
# ---------------------------------------------------------------------------


def faiss_knn(
    q: np.ndarray, db: np.ndarray, k: int, threads: int
) -> tuple[float, float, float, float]:
    """faiss-cpu ``IndexFlatL2``: the k nearest database items of every
    query. Returns (base MB, CPU seconds before the search, search seconds,
    index-building seconds)."""
    import faiss

    faiss.omp_set_num_threads(threads)
    base = peak_mb()
    began = time.perf_counter()
    index = faiss.IndexFlatL2(db.shape[1])
    index.add(db)
    index_seconds = time.perf_counter() - began
    cpu = cpu_seconds()
    began = time.perf_counter()
    index.search(q, k)
    return base, cpu, time.perf_counter() - began, index_seconds


def worker(method: str, folder: Path, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    q = np.load(folder / "query_emb.npy")
    ql = np.load(folder / "query_labels.npy")
    db = np.load(folder / "db_emb.npy")
    dl = np.load(folder / "db_labels.npy")
    out = {}

    if method == "faiss_top1000":
        base, cpu, seconds, out["index_seconds"] = faiss_knn(q, db, 1000, threads)
    elif method == "pml":
        import faiss
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        faiss.omp_set_num_threads(threads)
        calc = AccuracyCalculator(
            include=(
                "precision_at_1",
                "r_precision",
                "mean_average_precision_at_r",
                "mean_average_precision",
            ),
            k="max_bin_count",
            device=torch.device("cpu"),
        )
        tensors = [torch.from_numpy(x) for x in (q, ql, db, dl)]
        base, cpu, seconds, result = timed(
            lambda: calc.get_accuracy(*tensors, ref_includes_query=False)
        )
        out["metrics"] = {k: float(v) for k, v in result.items()}
    elif method == "exact":
        from workflow.retrieval.exact import evaluate_retrieval

        base, cpu, seconds, (out["metrics"], _) = timed(
            lambda: evaluate_retrieval(
                q, ql, db, dl, EVALUATION, chunk_size=1024, device="cpu"
            )
        )
    elif method.startswith("two_stage_c"):
        from workflow.retrieval.two_stage import evaluate_retrieval_methods

        c = int(method.removeprefix("two_stage_c"))
        centres = np.load(folder / "centres.npy")
        base, cpu, total, result = timed(
            lambda: evaluate_retrieval_methods(
                q,
                ql,
                db,
                dl,
                anchors=centres,
                classes=[c],
                rest="cut",
                evaluation=EVALUATION,
                chunk_size=1024,
                device="cpu",
                exact=False,
            )
        )
        # Index building (the assignment) is timed apart, as faiss's add.
        out["index_seconds"] = result[method].index_seconds
        seconds = total - out["index_seconds"]
        out["metrics"] = result[method].metrics
    else:
        raise SystemExit(f"unknown method {method}")
    # CPU seconds of the whole timed call (for two-stage: index building too).
    out.update(
        method=method,
        seconds=seconds,
        cpu_seconds=cpu_seconds() - cpu,
        base_mb=base,
        peak_mb=peak_mb(),
    )
    return out


# ---------------------------------------------------------------------------
# Parent: data, interleaved rounds, report
# ---------------------------------------------------------------------------


def run_worker(
    method: str, folder: Path, threads: int, wait_policy: str, script: str = __file__
) -> dict:
    """Run ``method`` in a fresh process of ``script`` (its ``--worker``)."""
    env = dict(os.environ)
    for var in ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"]:
        env[var] = str(threads)
    env["OMP_WAIT_POLICY"] = wait_policy
    result = subprocess.run(
        [
            sys.executable,
            script,
            "--worker",
            method,
            "--data",
            str(folder),
            "--threads",
            str(threads),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_rounds(
    methods,
    folder: Path,
    threads: int,
    wait_policy: str,
    rounds: int,
    say,
    script: str = __file__,
) -> dict[str, list[dict]]:
    """Each method once per round, interleaved, each in a fresh process;
    each run and the load average at the end told to ``say``."""
    runs = {m: [] for m in methods}
    for r in range(rounds):
        for m in methods:
            result = run_worker(m, folder, threads, wait_policy, script)
            runs[m].append(result)
            say(
                f"  round {r + 1}: {m:15s} {result['seconds']:8.2f} s  "
                f"(cpu {result['cpu_seconds']:7.2f} s)  peak {result['peak_mb']:7.0f} MB"
            )
    say(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return runs


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def versions() -> str:
    import faiss
    import pytorch_metric_learning
    import torch

    return (
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"faiss-cpu {faiss.__version__}, pytorch-metric-learning "
        f"{pytorch_metric_learning.__version__}, numpy {np.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--small", action="store_true", help="Q=1,000, N=10,000 (quick check)"
    )
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--database", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--wait-policy",
        choices=["passive", "active"],
        default="passive",
        help="OMP_WAIT_POLICY of every method (see the module docstring)",
    )
    parser.add_argument(
        "--methods",
        default="faiss_top1000,exact,two_stage_c1,two_stage_c2,two_stage_c5,pml",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="also write the report here (default for a full run: "
        "benchmarks/results/retrieval_cpu.txt)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.threads)))
        return
    if args.small:
        args.queries, args.database = 1_000, 10_000
    output = args.output
    if output is None and not args.small:
        output = REPO / "benchmarks/results/retrieval_cpu.txt"
    methods = args.methods.split(",")
    say = Report()
    say(f"# Retrieval benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
    say(
        f"device: {cpu_name()}, {args.threads} threads of {os.cpu_count()} CPUs, "
        f"OMP_WAIT_POLICY={args.wait_policy}; no GPU used"
    )
    say(f"versions: {versions()}")
    say(
        f"data: Q={args.queries:,} queries, N={args.database:,} database items, d={args.dim}, "
        f"float32, {CLASSES} classes (centre + {NOISE} x N(0, I) noise), seed {SEED}"
    )
    say(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_data(folder, args.queries, args.database, args.dim)
        runs = run_rounds(
            methods, folder, args.threads, args.wait_policy, args.rounds, say
        )

    say()
    say(
        f"{'method':15s} {'seconds':>9s} {'cpu s':>8s} {'index s':>8s} {'base MB':>8s} {'peak MB':>8s}  metrics"
    )
    summary = {}
    for m in methods:
        seconds = statistics.median(r["seconds"] for r in runs[m])
        cpu = statistics.median(r["cpu_seconds"] for r in runs[m])
        peak = max(r["peak_mb"] for r in runs[m])
        base = max(r["base_mb"] for r in runs[m])
        index = runs[m][0].get("index_seconds")
        metrics = runs[m][0].get("metrics", {})
        shown = ", ".join(
            f"{k}={v:.4f}"
            for k, v in metrics.items()
            if k
            in (
                "precision@10",
                "map",
                "map@r",
                "r_precision",
                "precision_at_1",
                "mean_average_precision_at_r",
                "mean_average_precision",
            )
        )
        summary[m] = dict(seconds=seconds, cpu=cpu, peak=peak)
        say(
            f"{m:15s} {seconds:9.2f} {cpu:8.2f} {'' if index is None else f'{index:8.2f}':>8s} "
            f"{base:8.0f} {peak:8.0f}  {shown}"
        )

    say()
    say("ratios of wall time (targets in brackets; of CPU time in parentheses):")

    def cpu_ratio(a, b):
        return f"(cpu {summary[a]['cpu'] / summary[b]['cpu']:.2f})"

    if "exact" in summary and "faiss_top1000" in summary:
        ratio = summary["exact"]["seconds"] / summary["faiss_top1000"]["seconds"]
        ok = ratio <= TARGETS["exact_vs_faiss"]
        say(
            f"  exact (all metrics) / faiss top-1000 search time: {ratio:.2f} "
            f"[<= {TARGETS['exact_vs_faiss']}] {'met' if ok else 'MISSED'} "
            f"{cpu_ratio('exact', 'faiss_top1000')}"
        )
    if "exact" in summary:
        gb = summary["exact"]["peak"] / 1024
        ok = gb < TARGETS["exact_peak_gb"]
        say(
            f"  exact peak memory: {gb:.2f} GB [< {TARGETS['exact_peak_gb']}] {'met' if ok else 'MISSED'}"
        )
    for c in TWO_STAGE:
        m = f"two_stage_c{c}"
        if "exact" in summary and m in summary:
            ratio = summary["exact"]["seconds"] / summary[m]["seconds"]
            target = (
                f" [>= {TARGETS['speedup_c1']}] {'met' if ratio >= TARGETS['speedup_c1'] else 'MISSED'}"
                if c == 1
                else ""
            )
            say(f"  exact / {m} time: {ratio:.2f}{target} {cpu_ratio('exact', m)}")
    if "pml" in summary and "exact" in summary:
        say(
            f"  pml AccuracyCalculator / exact time: "
            f"{summary['pml']['seconds'] / summary['exact']['seconds']:.2f} {cpu_ratio('pml', 'exact')}"
        )
    say()
    for note in NOTES:
        say(note)
    say.write(output)


if __name__ == "__main__":
    main()

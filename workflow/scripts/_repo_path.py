"""Imported first by every rule script: puts the repository root on sys.path
so that ``import workflow...`` finds this project's package, and starts the
job's watch on its Snakemake process (:func:`workflow.job_guard.watch_parent`):
whatever the rule, the job stops, writing nothing more, once the Snakemake
that started it has ended. Snakemake adds this folder (the scripts' own) to
sys.path, which is how this module is found."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from workflow.job_guard import watch_parent  # noqa: E402  (needs the path above)

watch_parent()

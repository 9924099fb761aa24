"""Imported first by every rule script: puts the repository root on sys.path
so that ``import workflow...`` finds this project's package. Snakemake adds
this folder (the scripts' own) to sys.path, which is how this module is found."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

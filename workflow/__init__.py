"""CBIR loss benchmark: the library code that the Snakemake rules run.

Everything here is importable and testable without Snakemake; the scripts in
``workflow/scripts`` only read a rule's inputs and parameters and call it.
"""

__version__ = "0.1.0"

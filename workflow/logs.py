"""Send a rule script's output to its ``log:`` file."""

from __future__ import annotations

import contextlib
import sys
import traceback


@contextlib.contextmanager
def log_to(path):
    """Redirect stdout and stderr (tqdm bars, warnings, tracebacks) to ``path``."""
    with open(path, "w", buffering=1) as log:
        old = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = log
        try:
            yield log
        except BaseException:
            traceback.print_exc(file=log)
            raise
        finally:
            sys.stdout, sys.stderr = old

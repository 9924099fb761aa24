import sys

from snakemake.exceptions import WorkflowError

# The `workflow` package of this repository.
sys.path.insert(0, workflow.basedir)

from workflow.config import ConfigError
from workflow.guards.files import check_config_files

# config.yaml, which the Snakefile's `configfile:` reads (also under
# --configfile). The files given with --configfile Snakemake reads itself
# before this Snakefile runs; `python -m workflow.guards FILE` names a broken
# one's line.
try:
    check_config_files(["config.yaml"])
except ConfigError as error:
    raise WorkflowError(str(error))

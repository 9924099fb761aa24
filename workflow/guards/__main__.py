"""``python -m workflow.guards FILE...``: check config files as the
workflow does. For a file given with --configfile, Snakemake's own reader
runs before the workflow and names neither the file nor the line."""

import sys

from workflow.config import ConfigError
from workflow.guards.files import check_config_file

try:
    for config_file in sys.argv[1:]:
        check_config_file(config_file)
        print(
            f"config file {config_file}: a mapping of keys; `snakemake -n` checks its values"
        )
except ConfigError as error:
    sys.exit(str(error))

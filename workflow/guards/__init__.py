"""Config checks that the schema cannot express, run by the config loader
(``workflow.config_loader.load_config``, which ``rules/common.smk`` calls)
before any job is planned, so a bad input stops ``snakemake -n`` with the
culprit named instead of failing hours later inside a job. One module per
stage of what is checked:

- :mod:`workflow.guards.files`: the config files, before anything reads them;
- :mod:`workflow.guards.entries`: the entries of datasets, backbones and
  losses (names, parameters, pretrained weights, protocols, user files);
- :mod:`workflow.guards.declarations`: declared tables and rankings;
- :mod:`workflow.guards.counts`: class counts, cutoffs and the figures'
  queries, where the config gives the numbers.

Each module's docstring lists what it checks, and why.
"""

from __future__ import annotations

from workflow.guards.counts import check_class_counts, check_cutoffs, check_figures
from workflow.guards.declarations import (
    check_rankings,
    check_table_metrics,
    check_tables,
)
from workflow.guards.entries import (
    check_names,
    check_parameters,
    check_pretrained,
    check_protocols,
    check_user_files,
)


def check_config(config: dict) -> None:
    """The other checks of this module, on the validated, expanded config."""
    check_names(config)
    check_user_files(config)
    check_protocols(config)
    check_class_counts(config)
    check_parameters(config)
    check_pretrained(config)
    check_table_metrics(config)
    check_tables(config)
    check_rankings(config)
    check_figures(config)
    check_cutoffs(config)

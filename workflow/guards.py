"""Config checks that the schema cannot express, run by ``rules/common.smk``
before any job is planned, so a bad input stops ``snakemake -n`` with the
culprit named instead of failing hours later inside a job:

- **duplicate keys** in a config file: PyYAML (and Snakemake's loader)
  silently keep the last of two equal keys, so a second ``cam:`` under
  ``losses`` would replace the first without a word;
- **names** of datasets, regimes, backbones, losses (also those made by
  sweeps) and tables: they become folder names and Snakemake wildcards, so
  only letters, digits, ``_``, ``.``, ``-``, starting with a letter or
  digit (no ``/``, no ``..``, nothing a shell would interpret);
- **parameters** of losses and backbones: every key of ``params`` must be
  an argument of the registered class or builder (a typo would otherwise
  stop the training job);
- **table metrics**: every metric a declared table shows must be one that
  ``evaluate`` writes with the configured ``evaluation`` settings;
- **pretrained weights**: ``backbones.<name>.params.pretrained`` must name
  a weights record for the backbone's arch, or a file of your own with its
  checksum and normalisation (``workflow.backbones.weights.resolve``; no
  file is read here).
"""

from __future__ import annotations

import difflib
import inspect
import re
from pathlib import Path

import yaml

from workflow.config import ConfigError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
NAMED_SECTIONS = ["datasets", "regimes", "backbones", "losses", "tables"]
# Arguments the pipeline passes itself; never from ``params``.
PIPELINE_ARGUMENTS = {
    "losses": {"num_classes", "embedding_size"},
    "backbones": {"in_channels", "image_size", "embedding_size"},
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses two equal keys in one mapping."""

    path = "<config>"

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"config file {self.path}, line {line}: key {key!r} appears twice in one "
                    f"mapping (first on line {seen[key]}); YAML would silently keep only the "
                    "last one. Rename or remove one of them."
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def check_duplicate_keys(path) -> None:
    """Raise :class:`ConfigError` naming the file, line and key if a mapping
    of the YAML (or JSON) file ``path`` has the same key twice."""
    loader_class = type("Loader", (_UniqueKeyLoader,), {"path": str(path)})
    with open(path, encoding="utf-8") as f:
        loader = loader_class(f)
        try:
            loader.get_single_data()
        finally:
            loader.dispose()


def check_names(config: dict) -> None:
    for section in NAMED_SECTIONS:
        for name in config.get(section) or {}:
            if not NAME.match(str(name)):
                raise ConfigError(
                    f"config key {section}.{name}: {name!r} becomes a folder name and a "
                    "wildcard, so it may hold only letters, digits, '_', '.' and '-', "
                    "starting with a letter or digit; rename it"
                    + (" (a swept parameter's value is part of the name)" if section == "losses" else "")
                )


def _check_arguments(key: str, kind: str, builder, params: dict, reserved: set[str]) -> None:
    signature = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values()):
        return  # takes anything
    accepted = [p for p in signature if p not in reserved and p != "self"]
    for name in params:
        if name in reserved:
            raise ConfigError(
                f"config key {key}.{name}: the pipeline sets {name!r} itself; remove it from params"
                + (" (embedding_size belongs to the backbone entry)" if name == "embedding_size" else "")
            )
        if name not in accepted:
            close = difflib.get_close_matches(name, accepted, n=1)
            raise ConfigError(
                f"config key {key}.{name}: {kind} has no parameter {name!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; it accepts: {', '.join(accepted) or 'none'}"
            )


def check_parameters(config: dict) -> None:
    from workflow.backbones import BACKBONES
    from workflow.losses import LOSSES

    for name, entry in config["losses"].items():
        _check_arguments(
            f"losses.{name}.params", f"loss {entry['impl']!r}", LOSSES.get(entry["impl"]),
            entry.get("params") or {}, PIPELINE_ARGUMENTS["losses"],
        )
    for name, entry in config["backbones"].items():
        _check_arguments(
            f"backbones.{name}.params", f"backbone {entry['arch']!r}", BACKBONES.get(entry["arch"]),
            entry.get("params") or {}, PIPELINE_ARGUMENTS["backbones"],
        )


def check_pretrained(config: dict) -> None:
    from workflow.backbones.weights import resolve

    for name, entry in config["backbones"].items():
        params = entry.get("params") or {}
        if params.get("pretrained") is not None:
            resolve(params["pretrained"], entry["arch"], f"backbones.{name}.params.pretrained")


def check_table_metrics(config: dict) -> None:
    from workflow.evaluate import metric_names

    known = metric_names(config.get("evaluation") or {})
    named = [
        (f"tables.{table}.metrics", metric)
        for table, declaration in (config.get("tables") or {}).items()
        for metric in declaration.get("metrics", [])
    ]
    if config.get("selection"):
        named.append(("selection.metric", config["selection"]["metric"]))
    for key, metric in named:
        if metric not in known:
            close = [m for m in known if m.lower() == metric.lower()]
            close = close or difflib.get_close_matches(metric, known, n=1)
            raise ConfigError(
                f"config key {key}: no metric {metric!r} is computed"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; with these evaluation settings the metrics are: {', '.join(known)}"
                " (precision@k and top{k}_error exist for the k in evaluation.precision_at"
                " and evaluation.top_k_error)"
            )


def check_config_files(paths) -> None:
    """Duplicate keys in the config files (before anything reads them)."""
    for path in paths:
        if Path(path).is_file():
            check_duplicate_keys(path)


def check_config(config: dict) -> None:
    """The other checks of this module, on the validated, expanded config."""
    check_names(config)
    check_parameters(config)
    check_pretrained(config)
    check_table_metrics(config)

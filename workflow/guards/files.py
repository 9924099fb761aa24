"""Checks of the config files themselves, before anything reads them:

- **config files**: a missing file, a YAML syntax error (named with its
  line and column), an empty file or one holding a list or a single value;
  and **duplicate keys**: PyYAML (and Snakemake's loader)
  silently keep the last of two equal keys, so a second ``cam:`` under
  ``losses`` would replace the first without a word;
"""

from __future__ import annotations

from pathlib import Path

import yaml

from workflow.config import ConfigError


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


def check_config_file(path) -> None:
    """Raise :class:`ConfigError` naming the file ``path`` unless it is a
    YAML (or JSON) file holding a mapping with no key twice in any of its
    mappings: a missing file, a syntax error (with its line and column),
    an empty file and a list or a single value each get their message.
    (Snakemake's own reader names neither the file nor the line.)"""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file {path}: "
            + ("is a folder" if path.is_dir() else "no such file")
            + "; give the path of a YAML or JSON config file (relative to the folder Snakemake runs in)"
        )
    loader_class = type("Loader", (_UniqueKeyLoader,), {"path": str(path)})
    try:
        with open(path, encoding="utf-8") as f:
            loader = loader_class(f)
            try:
                data = loader.get_single_data()
            finally:
                loader.dispose()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        context = (
            f" ({error.context}, line {error.context_mark.line + 1})"
            if error.context and error.context_mark
            else ""
        )
        raise ConfigError(
            f"config file {path}, line {mark.line + 1}, column {mark.column + 1}: not valid YAML: "
            f"{error.problem}{context}; fix the file there (YAML indents with spaces, never tabs; "
            "a value holding ': ' or starting with a special character needs quotes)"
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"config file {path}: not a YAML or JSON text file ({error})"
        ) from None
    if data is None:
        raise ConfigError(
            f"config file {path} is empty (or only comments); a config is a mapping of keys "
            "(datasets:, regimes:, backbones:, losses:, seeds:, ...): see docs/configuration.md"
        )
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"the single value {data!r}"
        raise ConfigError(
            f"config file {path} holds {kind}, not a mapping of keys; a config is a mapping at its top "
            "level (datasets:, regimes:, backbones:, losses:, seeds:, ...): see docs/configuration.md"
        )


def check_config_files(paths) -> None:
    """Every config file that exists, by :func:`check_config_file` (before
    anything reads it)."""
    for path in paths:
        if Path(path).is_file():
            check_config_file(path)

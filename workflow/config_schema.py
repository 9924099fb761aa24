"""The config's JSON schema (``workflow/schemas/config.schema.yaml``) and
the checks around it: validation with defaults filled in, integers that
are integers, finite numbers, and one line naming the key of a violation.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from workflow.config import ConfigError

SCHEMA = Path(__file__).parent / "schemas" / "config.schema.yaml"


def validate_config(config: dict) -> dict:
    """Check ``config`` against the schema with ``snakemake.utils.validate``
    and fill in defaults (in place and returned). A violation raises
    :class:`ConfigError` naming the key."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(config, str(SCHEMA))
    except WorkflowError as error:
        raise ConfigError(describe_schema_error(error)) from error
    check_integers(config)
    return config


def check_integers(config: dict) -> None:
    """Every value of a key the schema types ``integer`` is an integer, not
    a float such as ``1.0``: JSON Schema counts a float with no fractional
    part as an integer, and it would reach a job as a float (a ``range``
    with a float, a folder ``seed1.0``, a metric ``precision@1.0``). One
    walk of the whole schema (its ``$defs``, arrays, nested sections) with
    a stricter integer type, so no integer key is left out; run after the
    schema check (which reports every other violation)."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(SCHEMA.read_text())
    base = jsonschema.validators.validator_for(schema)
    strict = base.TYPE_CHECKER.redefine(
        "integer",
        lambda _, value: isinstance(value, int) and not isinstance(value, bool),
    )
    validator = jsonschema.validators.extend(base, type_checker=strict)(schema)
    floats = [
        error
        for error in validator.iter_errors(config)
        if error.validator == "type"
        and isinstance(error.instance, float)
        and "integer"
        in (
            error.validator_value
            if isinstance(error.validator_value, list)
            else [error.validator_value]
        )
    ]
    if floats:  # the first by key, whatever order the validator walked in
        error = min(floats, key=lambda e: [str(part) for part in e.absolute_path])
        key = ".".join(str(part) for part in error.absolute_path)
        raise ConfigError(
            f"config key {key}: {error.instance!r} is not an integer; write {int(error.instance)}"
            + (
                f"\n  {key}: {error.schema['description']}"
                if error.schema.get("description")
                else ""
            )
        )


def describe_schema_error(error: Exception) -> str:
    """One line naming the config key of a schema violation (the jsonschema
    error inside Snakemake's WorkflowError), then the schema's description."""
    import jsonschema

    inner = error  # Snakemake raises its WorkflowError while handling it
    while inner is not None and not isinstance(inner, jsonschema.ValidationError):
        inner = inner.__cause__ or inner.__context__
    if inner is None:
        return str(error)
    key = ".".join(str(part) for part in inner.absolute_path) or "(top level)"
    message = f"config key {key}: {inner.message}"
    if inner.validator == "type":
        message += number_hint(inner.instance)
    description = (
        inner.schema.get("description") if isinstance(inner.schema, dict) else None
    )
    if (
        inner.validator == "pattern" and description
    ):  # the description says the form; the regex would not
        message = f"config key {key}: {inner.instance!r} does not match the form it takes (below)"
    if description:
        message += f"\n  {key}: {description}"
    return message


# A number in exponent form that Python reads but YAML 1.1 (PyYAML, so
# Snakemake) does not: YAML 1.1 wants a dot and a signed exponent.
_EXPONENT_FORM = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+))[eE]([-+]?)(\d+)$")


def number_hint(value) -> str:
    """For a string where a number is expected: if it is a number in
    exponent form (``1e-3``, which YAML 1.1 reads as a string), how to
    write it; else nothing."""
    match = _EXPONENT_FORM.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        return ""
    mantissa, sign, exponent = match.groups()
    written = (
        f"{mantissa if '.' in mantissa else mantissa + '.0'}e{sign or '+'}{exponent}"
    )
    return (
        f" (YAML 1.1, which Snakemake reads, takes {value} for a string: "
        f"write {written}, with a dot and a signed exponent)"
    )


def check_finite(config, key: str = "") -> None:
    """Every number in the config is finite: YAML's ``.nan`` and ``.inf``
    pass the schema's bounds (any comparison with NaN is false), and a NaN
    learning rate or an infinite weight decay would only fail in a job."""
    if isinstance(config, float) and not math.isfinite(config):
        raise ConfigError(
            f"config key {key or '(top level)'}: {config} is not a finite number; every number in "
            "the config must be finite: write a number"
        )
    items = (
        config.items()
        if isinstance(config, dict)
        else enumerate(config)
        if isinstance(config, list)
        else []
    )
    for name, value in items:
        check_finite(value, f"{key}.{name}" if key else str(name))

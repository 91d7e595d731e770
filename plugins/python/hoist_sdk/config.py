"""Plugin configuration (`spec.hooks.config`, JSON text) with errors that name the field.

`parse(text, schema)` checks a JSON object against a schema of field name → type (or
`(type, default)` for an optional field) and refuses fields the schema does not name::

    config = parse(ctx.config, {"port": int, "pollIntervalMs": (int, 2000)})
    config["port"]
"""

import json
from typing import Any, Dict


class ConfigError(ValueError):
    """The configuration does not fit the schema; the message names the field."""


def parse(text: str, schema: Dict[str, Any]) -> Dict[str, Any]:
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError as e:
        raise ConfigError(f"the configuration is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise ConfigError("the configuration must be a JSON object")
    unknown = sorted(set(value) - set(schema))
    if unknown:
        raise ConfigError(
            f"unknown field `{unknown[0]}`, expected one of {', '.join(f'`{k}`' for k in schema)}"
        )
    out: Dict[str, Any] = {}
    for name, spec in schema.items():
        kind, default, required = (spec[0], spec[1], False) if isinstance(spec, tuple) else (spec, None, True)
        if name not in value:
            if required:
                raise ConfigError(f"missing field `{name}`")
            out[name] = default
            continue
        field = value[name]
        # JSON has no int/float distinction for whole numbers written as 1.0; bool is not int.
        ok = isinstance(field, kind) and not (kind is int and isinstance(field, bool))
        if not ok:
            raise ConfigError(
                f"{name}: invalid type: {type(field).__name__}, expected {kind.__name__}"
            )
        out[name] = field
    return out

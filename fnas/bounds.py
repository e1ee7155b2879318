"""Bounds every request keeps, whatever its service: finite numbers and strings of a sane length.

`fnas.serving.RequestGuard` applies `violation` to every request before its
handler runs, so no service stores a NaN or a megabyte name (which used to pass
validation and then fail the search on NATS's message limit). Values echoed in
an error go through `clip`, so an error never carries a huge value back.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

#: The longest string any request field may hold (ids, names, space ids, dataset paths).
MAX_STRING_CHARS = 1024
#: The longest part of a value an error message echoes.
MAX_ECHO_CHARS = 80

_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)


def clip(value: Any, limit: int = MAX_ECHO_CHARS) -> str:
    """`value` as text, cut to `limit` characters with a note of its full length."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def violation(message: Any, prefix: str = "") -> str | None:
    """'<field path>: <reason>' for the first non-finite number or over-long string in `message`, or None.

    Runs on every request: a field path is spelled only for what it reports or descends into, and
    integers, enums, bools and bytes (which cannot break a bound) are not looked at.
    """
    for field, value in message.ListFields():
        name = prefix + field.name
        kind = field.type
        if kind == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                items = ((f"{name}[{clip(k, 20)!r}]", v) for k, v in value.items())
            elif field.is_repeated:
                items = ((f"{name}[{i}]", v) for i, v in enumerate(value))
            else:
                items = iter(((name, value),))
            for path, item in items:
                if not isinstance(item, int | float | str) and (problem := violation(item, path + ".")):
                    return problem
        elif kind in _FLOATS or kind == FieldDescriptor.TYPE_STRING:
            values = value if field.is_repeated else (value,)
            for i, item in enumerate(values):
                if kind in _FLOATS and not math.isfinite(item):
                    return f"{_path(name, field, i)}: must be a finite number, got {item}"
                if kind == FieldDescriptor.TYPE_STRING and len(item) > MAX_STRING_CHARS:
                    return f"{_path(name, field, i)}: longer than {MAX_STRING_CHARS} characters ({len(item)})"
    return None


def _path(name: str, field: FieldDescriptor, index: int) -> str:
    return f"{name}[{index}]" if field.is_repeated else name

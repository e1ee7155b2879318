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
    """'<field path>: <reason>' for the first non-finite number or over-long string in `message`, or None."""
    for field, value in message.ListFields():
        name = prefix + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            items = [(f"{name}[{clip(k, 20)!r}]", v) for k, v in value.items()]
        elif field.is_repeated:
            items = [(f"{name}[{i}]", v) for i, v in enumerate(value)]
        else:
            items = [(name, value)]
        for path, item in items:
            if field.type == FieldDescriptor.TYPE_MESSAGE and not isinstance(item, int | float | str):
                if (problem := violation(item, path + ".")) is not None:
                    return problem
            elif field.type in _FLOATS and not math.isfinite(item):
                return f"{path}: must be a finite number, got {item}"
            elif field.type == FieldDescriptor.TYPE_STRING and len(item) > MAX_STRING_CHARS:
                return f"{path}: longer than {MAX_STRING_CHARS} characters ({len(item)})"
    return None

"""Reading matrix.yaml: typed access to its mappings, every error naming the file and the key."""

from __future__ import annotations

import difflib
from collections.abc import Collection
from typing import Any

from harness.errors import ConfigError


class Reader:
    """Typed access to a YAML mapping that reports errors as file: key: problem."""

    def __init__(self, source: str, data: Any, path: str) -> None:
        self.source = source
        self.path = path
        if not isinstance(data, dict):
            raise self.error("", f"must be a mapping, got {type(data).__name__}")
        self.data: dict[str, Any] = data

    def error(self, key: str, problem: str) -> ConfigError:
        full = f"{self.path}.{key}" if self.path and key else (self.path or key)
        return ConfigError(self.source, full, problem)

    def only(self, *allowed: str) -> None:
        for key in self.data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(allowed)}"
                raise self.error(str(key), f"unknown key{hint}")

    def sub(self, key: str, default: Any = None) -> Reader:
        value = self.data.get(key, {} if default is None else default)
        return Reader(self.source, value, f"{self.path}.{key}" if self.path else key)

    def get(self, key: str, kind: type, default: Any = ..., required: bool = False) -> Any:
        if key not in self.data:
            if required or default is ...:
                raise self.error(key, "is required")
            return default
        value = self.data[key]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            raise self.error(key, f"must be a {kind.__name__}, got {value!r}")
        return value

    def names(self, key: str, known: Collection[str] | None = None) -> tuple[str, ...]:
        value = self.get(key, list, required=True)
        if not value:
            raise self.error(key, "must not be empty")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{key}[{i}]", f"must be a string, got {item!r}")
            if known is not None and item not in known:
                close = difflib.get_close_matches(item, list(known), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
                raise self.error(f"{key}[{i}]", f"{item!r} is not defined; {hint}")
        return tuple(value)

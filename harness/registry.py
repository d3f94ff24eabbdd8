"""Kinds by name, for the seams: a kind's name -> ``module:Class``, imported on first use.

Naming the module instead of importing it keeps reading a matrix free of the runtime (SSH,
namespaces, QEMU): only the kinds a run uses are imported. Registering a kind is one item:
``SITES["toy"] = "toy_site:ToySite"``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(dict[str, str], Generic[T]):
    """Names -> ``module:Class``; :meth:`load` gives the class."""

    def load(self, name: str) -> type[T]:
        """The class registered as ``name`` (its module imported now)."""
        module, _, cls = self[name].partition(":")
        kind: type[T] = getattr(import_module(module), cls)
        return kind

"""Scenarios, one module each: a module declares ``SCENARIO`` (see :mod:`.declare`).

Adding a scenario is adding a module here (and naming it in matrix.yaml):
this package finds every module that declares one, here or in a
``harness/scenarios/`` directory elsewhere on the Python path (a lab's own
scenarios, kept outside this repository). Scenario modules import
only declarations, checks and the guest protocol at the top, so the matrix
can be validated without loading anything that drives QEMU.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from harness.scenarios.declare import Scenario

__path__ = pkgutil.extend_path(__path__, __name__)


def _discover() -> dict[str, Scenario[Any]]:
    found: dict[str, Scenario[Any]] = {}
    for module in pkgutil.iter_modules(__path__):
        declared = getattr(importlib.import_module(f"{__name__}.{module.name}"), "SCENARIO", None)
        if isinstance(declared, Scenario):
            if declared.name in found:
                raise ValueError(f"two modules declare scenario {declared.name!r}")
            found[declared.name] = declared
    return dict(sorted(found.items()))


SCENARIOS: dict[str, Scenario[Any]] = _discover()
"""Every declared scenario by name."""

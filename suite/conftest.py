"""``pytest suite`` runs the migration matrix: this loads goldmig's plugin
(:mod:`harness.pytest_plugin`: ``--matrix``, ``--select``, ``--repeat``, ``--shard``, one test per
cell, known failures, the summary). ``goldmig run`` runs the same suite and adds the reports.
Plain ``pytest`` at the top level runs the project's own tests (tests/), not this.
"""

import pytest

import harness.pytest_plugin


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    # A conftest below the rootdir may not name plugins (pytest_plugins); registering it here,
    # in the first hook pytest calls, gives it every hook from this one on.
    pluginmanager.register(harness.pytest_plugin, "goldmig")

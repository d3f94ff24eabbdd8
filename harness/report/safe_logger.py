"""Allure's result writer, made to survive a full disk.

allure-pytest writes each result, container and attachment as a file; when
the reports filesystem is full that write raises inside a pytest hook, which
pytest turns into an INTERNALERROR that stops the whole run. Wrapped here, a
write that fails loses that one item (and says so at the end of the run)
while the run goes on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import allure_commons
import pytest
from allure_commons import hookimpl
from allure_commons.logger import AllureFileLogger


class SpaceSafeFileLogger:
    """Forwards every report to ``inner``; an OSError loses the item and is remembered."""

    def __init__(self, inner: AllureFileLogger) -> None:
        self._inner = inner
        self.lost: list[str] = []

    @hookimpl
    def report_result(self, result: Any) -> None:
        self._safely(f"result {getattr(result, 'name', '?')}", self._inner.report_result, result)

    @hookimpl
    def report_container(self, container: Any) -> None:
        self._safely("a container", self._inner.report_container, container)

    @hookimpl
    def report_attached_file(self, source: Any, file_name: str) -> None:
        self._safely(f"attachment {file_name}", self._inner.report_attached_file, source, file_name)

    @hookimpl
    def report_attached_data(self, body: Any, file_name: str) -> None:
        self._safely(f"attachment {file_name}", self._inner.report_attached_data, body, file_name)

    @hookimpl
    def report_globals(self, globals_item: Any) -> None:
        self._safely("globals", self._inner.report_globals, globals_item)

    def _safely(self, what: str, write: Any, *args: Any) -> None:
        try:
            write(*args)
        except OSError as exc:
            self.lost.append(f"{what}: {exc.strerror or exc}")
            report_dir = Path(self._inner._report_dir)
            for partial in report_dir.glob("*.tmp"):
                partial.unlink(missing_ok=True)


def install_safe_logger(config: pytest.Config) -> SpaceSafeFileLogger | None:
    """Put the wrapper in place of allure-pytest's own file logger (None when Allure is off),
    and the original back at the end, where allure-pytest's own clean-up expects it."""
    manager = allure_commons.plugin_manager
    for plugin in manager.get_plugins():
        if isinstance(plugin, AllureFileLogger):
            manager.unregister(plugin)
            safe = SpaceSafeFileLogger(plugin)
            manager.register(safe)

            def restore(original: AllureFileLogger = plugin, wrapper: SpaceSafeFileLogger = safe) -> None:
                manager.unregister(wrapper)
                manager.register(original)

            config.add_cleanup(restore)  # runs before allure-pytest's (clean-ups run last first)
            return safe
    return None

"""The pinned Allure 3 that builds the HTML report, installed by ``make allure`` into
``.venv/allure3`` from the npm registry; nothing is downloaded when a report is built."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.paths import REPO_ROOT
from harness.report.results import ReportError

PIN = Path(__file__).resolve().parent / "allure3" / "package.json"
INSTALLED = REPO_ROOT / ".venv" / "allure3"


def pinned_version() -> str:
    return str(json.loads(PIN.read_text())["dependencies"]["allure"])


def allure_command(installed: Path = INSTALLED) -> list[str]:
    """``node <allure cli>``, once the installed Allure is the pinned one."""
    pinned = pinned_version()
    package = installed / "node_modules" / "allure" / "package.json"
    if not package.exists():
        raise ReportError(f"{installed}: Allure {pinned} is not installed there; run `make allure` "
                          f"(it installs the version pinned in {PIN.relative_to(REPO_ROOT)} from the "
                          "npm registry)")
    version = str(json.loads(package.read_text()).get("version"))
    if version != pinned:
        raise ReportError(f"{package}: Allure {version} is installed but {PIN.relative_to(REPO_ROOT)} "
                          f"pins {pinned}; run `make allure`")
    node = shutil.which("node")
    if node is None:
        raise ReportError("node is not on PATH; run `make allure` (it installs Debian's nodejs)")
    return [node, str(package.parent / "cli.js")]

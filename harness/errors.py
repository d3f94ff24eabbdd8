"""The one error tree of the harness.

::

    GoldmigError
     +-- HarnessError            our bug or the environment: Allure "broken"
     |    +-- ConfigError        matrix.yaml or command-line input is wrong
     |    +-- BuildError         a QEMU build cannot be provisioned or introspected
     |    +-- CacheError         a cached artifact is damaged and cannot be remade here
     |    +-- HostError          a host cannot run what we asked
     |    +-- QemuStartError     QEMU exited or refused to start (argv, caps, machine)
     |    +-- HostOverloaded     a check could not be judged: the host starved the guest
     +-- ProductFailure          QEMU or the guest misbehaved: Allure "failed"
          +-- QemuCrashed        a QEMU process died during the cell
          +-- QemuUnresponsive   a live QEMU stopped answering QMP
          +-- QmpCommandError    QEMU refused a QMP command the scenario expected to succeed
          +-- MigrationFailed    QEMU reported the migration failed, or the destination did not run
          +-- MigrationTimeout   the migration did not finish in time
          +-- GuestUnresponsive  the guest agent did not answer or beat in time
          +-- CheckFailed        a guest-visible invariant does not hold
          +-- ChecksFailed       a cell's checks, some failed or not measured (judged per check)

ProductFailure derives from AssertionError so that pytest and Allure report it
as a test failure, while every other error is reported as broken.
"""

from __future__ import annotations

import json
import shlex
from typing import Any


class GoldmigError(Exception):
    """Root of every error the harness raises on purpose."""


class HarnessError(GoldmigError):
    """The harness or its environment is at fault, not QEMU."""


class ConfigError(HarnessError):
    """Invalid configuration: names the file, the key and what to do."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


class BuildError(HarnessError):
    """A build could not be provisioned or introspected."""


class CacheError(HarnessError):
    """A cached artifact does not match its recorded hash and is not remade (it may be in use):
    names the artifact and the command that clears it."""


class HostError(HarnessError):
    """A host could not run a command or was unreachable."""


class QemuStartError(HarnessError):
    """QEMU exited or never answered during start-up; carries its exit code, argv and output.

    ``message`` is the first line and should carry QEMU's last words (one-line
    summaries show nothing else); the command line and QEMU's output follow.
    """

    def __init__(self, message: str, argv: list[str], exitcode: int | None, output: str) -> None:
        self.argv = argv
        self.exitcode = exitcode
        self.output = output
        tail = output.strip()[-2000:] or "(no output)"
        super().__init__(f"{message}\ncommand: {shlex.join(argv)}\nQEMU said:\n{tail}")


class HostOverloaded(HarnessError):
    """A bound was exceeded by no more than the host kept the guest's vCPUs from running: the
    check is not measured, and the cell is broken (the environment), never failed."""


class ProductFailure(GoldmigError, AssertionError):
    """QEMU or the guest did something wrong: the cell fails (not broken)."""


class QemuCrashed(ProductFailure):
    """A QEMU process exited while the cell still needed it."""


class QemuUnresponsive(ProductFailure):
    """A QEMU process is alive but did not answer a QMP command in time."""


class QmpCommandError(ProductFailure):
    """QEMU answered a QMP command with an error, as qemu.qmp's ExecuteError: the error class
    (``GenericError``, ``DeviceNotFound``, ...), its description, the command and arguments.

    A scenario that expects a refusal catches it; anywhere else it fails the cell.
    """

    def __init__(self, monitor: str, command: str, args: dict[str, Any], error_class: str,
                 desc: str) -> None:
        self.command = command
        self.arguments = args
        self.error_class = error_class
        self.desc = desc
        super().__init__(f"{monitor}: QEMU refused QMP {command} {json.dumps(args)}: "
                         f"{error_class}: {desc}")


class MigrationFailed(ProductFailure):
    """QEMU reported the migration as failed, or the destination is not running."""


class MigrationTimeout(ProductFailure):
    """The migration did not complete within its time limit."""


class GuestUnresponsive(ProductFailure):
    """The guest agent did not reply or beat within the time limit."""


class CheckFailed(ProductFailure):
    """A guest-visible invariant does not hold; says which, the values and the evidence."""

    def __init__(self, invariant: str, before: object, after: object, evidence: str) -> None:
        self.invariant = invariant
        self.before = before
        self.after = after
        self.evidence = evidence
        super().__init__(
            f"{invariant}: before={before!r} after={after!r}\nevidence: {evidence}"
        )


class ChecksFailed(ProductFailure):
    """Some of a cell's checks failed or could not be measured; carries every check result, so
    the verdict is judged check by check (:mod:`harness.checks.verdict`), never on this message."""

    def __init__(self, results: list[Any]) -> None:
        self.results = results
        bad = [r for r in results if r.counts_against]
        lines = [f"{r.invariant} {r.verdict.value}: {r.after!r}; {r.evidence}" for r in bad]
        self.failed = bad
        super().__init__(f"{len(bad)} of {len(results)} checks did not pass: "
                         f"{', '.join(r.id for r in bad)}\n" + "\n".join(lines))

    def named(self, invariant: str) -> Any:
        """The result of the check named ``invariant`` (KeyError if the cell has none)."""
        for result in self.results:
            if result.invariant == invariant:
                return result
        raise KeyError(f"no check {invariant!r} among {[r.invariant for r in self.results]}")

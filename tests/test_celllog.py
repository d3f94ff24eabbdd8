"""The harness log of a cell: what goldmig's loggers say during one cell lands in its
``harness.log`` and nowhere else, a full disk never fails the cell, QMP commands and hop phases
are in it, the report attaches it and the summary says where a failed cell's log is."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.checks.result import CheckResult
from harness.checks.verdict import judge
from harness.errors import ChecksFailed, QmpCommandError
from harness.migration import run as migration_run
from harness.qemu.monitor import Monitor, qmp_line
from harness.report.allure_steps import attach_to_test, cell_attachments
from harness.report.run_summary import CellOutcome, summary_lines
from harness.runner.celllog import (
    LOG_NAME,
    QuietFileHandler,
    abridged,
    cell_log,
    cell_slug,
    evidence_dir,
    log_verdict,
)

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (\S+) (goldmig(?:\.\w+)*) (\w+): (.*)$")


def _messages(path: Path) -> list[str]:
    """Each line's logger and message (the time and thread checked on the way)."""
    out = []
    for line in path.read_text().splitlines():
        match = LINE.match(line)
        assert match, f"not a harness.log line: {line!r}"
        out.append(f"{match[2]} {match[4]}")
    return out


class TestCellLog:
    def test_writes_the_goldmig_lines_of_the_block_and_nothing_after_it(self, tmp_path: Path) -> None:
        logging.getLogger("goldmig.migration").info("before the cell")
        with cell_log(tmp_path, "a>b/m/s") as path:
            logging.getLogger("goldmig.migration").info("hop %s -> %s", "src", "dst")
            logging.getLogger("goldmig.qmp").debug("src -> query-status {}")
            logging.getLogger("elsewhere").warning("not ours")
        logging.getLogger("goldmig.migration").info("after the cell")
        assert path == tmp_path / LOG_NAME
        said = _messages(path)
        assert said[1:-1] == ["goldmig.migration hop src -> dst", "goldmig.qmp src -> query-status {}"]
        assert said[0].startswith("goldmig.cell cell a>b/m/s starts (pid ")
        assert said[-1] == "goldmig.cell cell a>b/m/s ends"
        assert "MainThread goldmig.migration INFO: hop src -> dst" in path.read_text()

    def test_a_second_cell_gets_only_its_own_lines(self, tmp_path: Path) -> None:
        first, second = tmp_path / "1", tmp_path / "2"
        for folder in (first, second):
            folder.mkdir()
        with cell_log(first, "one"):
            logging.getLogger("goldmig.cell").info("first's line")
        with cell_log(second, "two"):
            logging.getLogger("goldmig.cell").info("second's line")
        assert "goldmig.cell first's line" in _messages(first / LOG_NAME)
        assert not any("first" in m for m in _messages(second / LOG_NAME))
        assert "goldmig.cell second's line" in _messages(second / LOG_NAME)

    def test_an_error_is_the_last_line_raised_unchanged_and_the_logger_put_back(self, tmp_path: Path) -> None:
        root = logging.getLogger("goldmig")
        before = (root.level, root.propagate, list(root.handlers))
        error = ChecksFailed([CheckResult("tick stays steady", False, "<= 5 ms", "40 ms", "probe")])
        with pytest.raises(ChecksFailed) as raised, cell_log(tmp_path, "c"):
            raise error
        assert raised.value is error
        assert (root.level, root.propagate, list(root.handlers)) == before
        text = (tmp_path / LOG_NAME).read_text()
        assert "INFO: cell c ends: ChecksFailed: " in text
        assert "Traceback (most recent call last)" in text  # at DEBUG, after the one-line summary

    def test_nothing_reaches_the_console_or_pytests_captured_logs(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        with cell_log(tmp_path, "c"):
            logging.getLogger("goldmig.migration").warning("source reports failed")
        assert caplog.records == []
        assert capfd.readouterr() == ("", "")
        assert "WARNING: source reports failed" in (tmp_path / LOG_NAME).read_text()

    def test_a_run_directory_gone_loses_the_lines_not_the_cell(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    ) -> None:
        with cell_log(tmp_path / "gone", "c") as path:  # the file cannot even be opened
            logging.getLogger("goldmig.cell").info("lost")
        assert not path.exists()
        assert capfd.readouterr() == ("", "")

    def test_a_full_disk_loses_the_lines_not_the_cell(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
    ) -> None:
        handlers: list[QuietFileHandler] = []
        real_open = QuietFileHandler._open

        def full_disk_open(self: QuietFileHandler) -> Any:
            stream = real_open(self)
            handlers.append(self)

            def write(_: str) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")
            monkeypatch.setattr(stream, "write", write)
            return stream
        monkeypatch.setattr(QuietFileHandler, "_open", full_disk_open)
        with cell_log(tmp_path, "c"):
            for n in range(3):
                logging.getLogger("goldmig.qmp").debug("line %d", n)
        assert handlers and handlers[0].lost >= 4  # the start line and three more
        assert capfd.readouterr() == ("", "")
        assert logging.getLogger("goldmig").handlers == []

    def test_a_cell_inside_a_cell_logs_to_both_and_leaves_the_outer_one_working(self, tmp_path: Path) -> None:
        outer, inner = tmp_path / "outer", tmp_path / "inner"
        for folder in (outer, inner):
            folder.mkdir()
        with cell_log(outer, "outer"):
            with cell_log(inner, "inner"):
                logging.getLogger("goldmig.cell").info("both")
            logging.getLogger("goldmig.cell").debug("outer only")
        assert "goldmig.cell outer only" in _messages(outer / LOG_NAME)
        assert "goldmig.cell both" in _messages(inner / LOG_NAME)
        assert "goldmig.cell outer only" not in _messages(inner / LOG_NAME)


class TestVerdictLine:
    def test_the_verdict_and_each_check_that_counts_against_it(self, tmp_path: Path) -> None:
        verdict = judge([CheckResult("tick stays steady", False, "<= 5 ms", "40 ms", "probe"),
                         CheckResult("guest answers", True, "", "yes", "agent")], [])
        with cell_log(tmp_path, "c"):
            log_verdict(verdict)
        said = _messages(tmp_path / LOG_NAME)
        assert "goldmig.cell verdict: failed: unexplained: tick-stays-steady" in said
        assert 'goldmig.cell check tick-stays-steady: failed, unexplained: 40 ms' in said
        assert 'goldmig.cell check guest-answers: passed: yes' in said  # at DEBUG


class TestQmpLines:
    def test_commands_and_answers_are_abridged_with_the_time_taken(self) -> None:
        big = {"data": "x" * 1000}
        assert qmp_line("src", "->", {"execute": "migrate", "arguments": {"uri": "unix:/r/dst.in"}}) == (
            'src -> migrate {"uri": "unix:/r/dst.in"}')
        line = qmp_line("src", "<-", {"return": big}, "query-migrate", 1.25)
        assert line.startswith('src <- query-migrate: ok in 1.2 ms: {"data": "xxx')
        assert line.endswith("... (1012 chars)") and len(line) < 300
        assert qmp_line("dst", "<-", {"error": {"class": "GenericError", "desc": "Duplicate ID"}},
                        "device_add", 0.9) == "dst <- device_add: error GenericError in 0.9 ms: Duplicate ID"
        assert qmp_line("dst", "<-", {"timeout": 30.0}, "query-status", 30000.0) == (
            "dst <- query-status: no answer in 30000.0 ms: timed out after 30.0 s")
        assert qmp_line("src", "event", {"event": "MIGRATION", "data": {"status": "active"},
                                         "timestamp": {"seconds": 1, "microseconds": 2}}) == (
            'src event MIGRATION {"status": "active"}')
        assert qmp_line("src", "<-", {"libvirt-error": "domain is not running"}, "resume", 2.0) == (
            "src <- resume: libvirt error in 2.0 ms: domain is not running")

    def test_abridged_keeps_short_text_and_says_how_long_long_text_was(self) -> None:
        assert abridged({"a": 1}) == '{"a": 1}'
        assert abridged("y" * 10, limit=4) == "yyyy... (10 chars)"


class _FakeQmp:
    """A QMP server on a unix socket that greets, accepts capabilities, answers ``query-status``,
    refuses anything else with GenericError and sends an event after ``cont``."""

    def __init__(self, path: Path) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.thread = threading.Thread(target=self._serve, name="fake-qmp", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            self._send(conn, {"QMP": {"version": {"qemu": {"major": 9, "minor": 0, "micro": 0},
                                                  "package": ""}, "capabilities": []}})
            for msg in self._messages(conn):  # qemu.qmp sends JSON objects back to back
                name, ident = msg.get("execute"), msg.get("id")
                if name in ("qmp_capabilities", "query-status", "cont"):
                    answer: dict[str, Any] = {"return": {"status": "running"}
                                              if name == "query-status" else {}}
                else:
                    answer = {"error": {"class": "GenericError", "desc": f"no command {name}"}}
                self._send(conn, answer | ({"id": ident} if ident is not None else {}))
                if name == "cont":
                    self._send(conn, {"event": "RESUME", "data": {},
                                      "timestamp": {"seconds": 1, "microseconds": 0}})

    @staticmethod
    def _messages(conn: socket.socket) -> Iterator[dict[str, Any]]:
        decoder, buffer = json.JSONDecoder(), ""
        while chunk := conn.recv(65536):
            buffer += chunk.decode()
            while buffer.strip():
                try:
                    msg, end = decoder.raw_decode(buffer.lstrip())
                except json.JSONDecodeError:
                    break  # the rest of it has not arrived yet
                buffer = buffer.lstrip()[end:]
                yield msg

    @staticmethod
    def _send(conn: socket.socket, message: dict[str, Any]) -> None:
        conn.sendall(json.dumps(message).encode() + b"\r\n")

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def fake_qmp() -> Iterator[Path]:
    short = Path(f"/tmp/gm-celllog-{os.getpid()}.sock")  # a unix socket path must stay short
    short.unlink(missing_ok=True)
    server = _FakeQmp(short)
    yield short
    server.close()
    short.unlink(missing_ok=True)


class TestMonitorLog:
    def test_each_command_its_answer_and_events_are_in_the_cells_log(self, tmp_path: Path,
                                                                    fake_qmp: Path) -> None:
        transcript = tmp_path / "src-qmp.log"
        with cell_log(tmp_path, "c") as path:
            monitor = Monitor("src", fake_qmp, transcript)
            monitor.connect(lambda: True, timeout=10)
            try:
                assert monitor.cmd("query-status") == {"status": "running"}
                with pytest.raises(QmpCommandError):
                    monitor.cmd("bogus", target="x" * 500)
                monitor.cmd("cont")
                assert monitor.wait_event(lambda e: e["event"] == "RESUME", timeout=5) is not None
            finally:
                monitor.close()
        said = "\n".join(_messages(path))
        assert "goldmig.qmp src -> query-status {}" in said
        assert re.search(r'goldmig\.qmp src <- query-status: ok in \d+\.\d ms: \{"status": "running"\}',
                         said)
        assert re.search(r'src -> bogus \{"target": "x+\.\.\. \(\d+ chars\)', said)
        assert re.search(r"src <- bogus: error GenericError in \d+\.\d ms: no command bogus", said)
        assert "goldmig.qmp src event RESUME {}" in said
        # the transcript is as it was: every entry whole
        kinds = [line.split()[2] for line in transcript.read_text().splitlines()]
        assert kinds == ["greeting", "->", "<-", "->", "<-", "->", "<-", "event"]
        assert "x" * 500 in transcript.read_text()


class TestMigrationStatusLog:
    def test_each_migration_status_is_logged_once_though_the_event_is_offered_again(
        self, tmp_path: Path,
    ) -> None:
        seen = migration_run._StatusLog("src")
        events = [{"event": "MIGRATION", "data": {"status": s},
                   "timestamp": {"seconds": 1, "microseconds": n}} for n, s in enumerate(("setup", "active"))]
        with cell_log(tmp_path, "c"):
            for _ in range(3):  # wait_event offers the kept events at each call
                assert [seen.final(e) for e in events] == [True, True]
            assert not seen.final({"event": "STOP", "data": {}})
        said = [m for m in _messages(tmp_path / LOG_NAME) if m.startswith("goldmig.migration")]
        assert said == ["goldmig.migration source src: migration setup",
                        "goldmig.migration source src: migration active"]


class TestReport:
    def test_evidence_dir_is_the_cells_slug_with_the_attempt_after_the_first(self, tmp_path: Path) -> None:
        assert cell_slug("qemu-7.2>qemu-10.0/pseries-7.2/baseline") == (
            "qemu-7.2_qemu-10.0_pseries-7.2_baseline")
        assert evidence_dir("a>b/m s", 2, tmp_path) == tmp_path / "runs" / "a_b_m_s#2"

    def test_the_harness_log_is_attached_to_the_test_when_the_cell_kept_one(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        assert cell_attachments(tmp_path) == ()
        (tmp_path / LOG_NAME).write_text("a line\n")
        attached = cell_attachments(tmp_path)
        assert [(a.name, a.path) for a in attached] == [("harness log (harness.log)", tmp_path / LOG_NAME)]
        hook = SimpleNamespace(report_attached_file=lambda **_: None, report_attached_data=lambda **_: None)
        monkeypatch.setattr("allure_commons.plugin_manager", SimpleNamespace(hook=hook))
        test = SimpleNamespace(attachments=[])
        attach_to_test(test, attached)
        assert [a.name for a in test.attachments] == ["harness log (harness.log)"]

    def test_the_summary_says_where_a_failed_cells_log_is_and_not_a_passed_ones(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.chdir(tmp_path)
        reports = tmp_path / "reports"
        for cell, attempt in (("b>a/m/s", 1), ("a>a/m/s", 1), ("c>c/m/s", 2), ("d>d/m/s", 1)):
            folder = evidence_dir(cell, attempt, reports)
            folder.mkdir(parents=True)
            (folder / LOG_NAME).write_text("a line\n")
        outcomes = [CellOutcome("b>a/m/s", "failed", "unexplained: tick", {"total": 3.0}),
                    CellOutcome("a>a/m/s", "passed", "", {"total": 2.0}),
                    CellOutcome("c>c/m/s", "passed", "", {"total": 2.0}, attempt=1),
                    CellOutcome("c>c/m/s", "broken", "HostError: no sshd", {"total": 2.0}, attempt=2),
                    CellOutcome("e>e/m/s", "broken", "HostError: no sshd")]  # no log kept
        lines = summary_lines(outcomes, reports)
        logs = [(lines[n - 1].split()[1], line.strip()) for n, line in enumerate(lines) if "log:" in line]
        assert logs == [("b>a/m/s", "log: reports/runs/b_a_m_s/harness.log"),
                        ("c>c/m/s", "log: reports/runs/c_c_m_s#2/harness.log")]  # flaky: its broken run

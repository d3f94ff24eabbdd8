"""Record, parse, summarise and diff QEMU migration streams (format version 3).

Public API::

    iter_records(source) -> Iterator[Record]      # parser: every record, in order
    summarise(source) -> StreamSummary            # .to_text(), .to_json(), .as_dict()
    diff(a, b) -> StreamDiff                      # worst first; .to_text(), .to_json()
    static_check(dump_a, dump_b, reverse=False, only=None) -> StaticCheck
    StreamError                                   # the only error they raise (static_check: none)

``source`` is a path or a binary file object. Streams to test with come from
:mod:`harness.stream.corpus` / :mod:`harness.stream.recorder`, QEMU's own
scripts from :mod:`harness.stream.peer`, the benchmark is :mod:`harness.stream.bench`.
"""

from harness.stream.diff import StreamDiff, diff
from harness.stream.errors import StreamError
from harness.stream.parser import iter_records
from harness.stream.static_check import StaticCheck, static_check
from harness.stream.summary import StreamSummary, summarise

__all__ = [
    "StaticCheck",
    "StreamDiff",
    "StreamError",
    "StreamSummary",
    "diff",
    "iter_records",
    "static_check",
    "summarise",
]

"""``python -m harness.stream summary FILE`` / ``diff A B``: the stream tools from a shell."""

from __future__ import annotations

import argparse
import sys

from harness.stream.errors import StreamError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.stream")
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("summary", help="summarise a migration stream")
    one.add_argument("stream")
    one.add_argument("--json", action="store_true", help="JSON instead of text")
    two = sub.add_parser("diff", help="compare two migration streams, what breaks first")
    two.add_argument("a")
    two.add_argument("b")
    two.add_argument("--json", action="store_true", help="JSON instead of text")
    args = parser.parse_args(argv)
    try:
        if args.command == "summary":
            from harness.stream.summary import summarise

            result = summarise(args.stream)
            sys.stdout.write(result.to_json() + "\n" if args.json else result.to_text())
            return 0
        from harness.stream.diff import diff

        outcome = diff(args.a, args.b)
        sys.stdout.write(outcome.to_json() + "\n" if args.json else outcome.to_text())
        return 1 if outcome.breaking else 0
    except StreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

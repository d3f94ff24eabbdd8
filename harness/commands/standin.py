"""Stand-in lab hosts: try ``hosts: lab`` without a lab.

Two namespace hosts that share nothing with the harness (their sshd runs in a
read-only view of a Debian suite's root with a /tmp of their own), so every
file, socket and stream goes over SSH as it would to a real POWER host. What
a stand-in cannot be is a POWER host with KVM: it runs ``accel: tcg``, and its
"own" QEMU is the suite's.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import yaml

from harness.builds.debian import ensure_suite_root
from harness.hosts.netns import NamespacePair

WORKDIR = "/tmp/goldmig"
"""The stand-ins' writable work directory (their root is read-only; /tmp is their own)."""


def lab_section(pair: NamespacePair, known_hosts: Path | None = None) -> dict[str, Any]:
    """matrix.yaml's ``lab:`` for the pair's two sides, as a lab would write it."""
    workdir = pair.workdir
    assert workdir is not None, "the pair is up"

    def host(label: str) -> dict[str, Any]:
        side = pair.side(label)
        return {"address": side.address, "key_file": str(workdir / "client_key"),
                "known_hosts": str(known_hosts or workdir / "known_hosts"),
                "accel": "tcg", "workdir": WORKDIR, "netns": side.netns}

    return {"source": host("a"), "destination": host("b")}


def standin_matrix(pair: NamespacePair, scenarios: list[str], machines: list[str],
                   keep_streams: str = "failed") -> dict[str, Any]:
    """A whole lab matrix on the stand-ins: their own QEMU in both directions."""
    return {
        "hosts": "lab",
        "lab": lab_section(pair),
        "builds": {"lab-qemu": {"kind": "host"}},
        "timeouts": {"boot_s": 60, "migrate_s": 120, "beat_s": 8},
        "groups": [{"name": "lab", "builds": ["lab-qemu"], "machines": machines,
                    "scenarios": scenarios}],
        "selections": {"all": ["*"]},
        "default_selection": "all",
        "reports": {"keep_streams": keep_streams},
    }


def serve(out: Path, suite: str) -> None:
    """Bring the stand-ins up, write their matrix to ``out``, and keep them until a signal."""
    with NamespacePair(ensure_suite_root(suite)) as pair:
        data = standin_matrix(pair, ["baseline-idle", "pingpong", "linkloss"],
                              ["pseries-7.2", "latest-common"])
        out.write_text("# stand-in lab hosts (namespace hosts sharing nothing with the harness, "
                       f"accel tcg, QEMU of Debian {suite}); gone when `goldmig standin` stops\n"
                       + yaml.safe_dump(data, sort_keys=False))
        print(f"stand-in lab hosts up: {pair.a.address} and {pair.b.address} (Debian {suite})\n"
              f"  matrix: {out}\n  run:    .venv/bin/goldmig run --matrix {out}\n"
              "Ctrl-C or SIGTERM takes them down.", flush=True)
        try:
            while True:
                signal.pause()
        except KeyboardInterrupt:  # the CLI turns SIGTERM into one too
            print("taking the stand-ins down", flush=True)

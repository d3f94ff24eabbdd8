"""Crashing and hanging inputs, one per site, saved where they can be replayed.

Each site (the place an exception was raised, or where a hang was caught)
keeps the smallest input seen for it: ``<dir>/<site slug>.bin`` and a
``.txt`` beside it with the traceback, how the input was made and the
command that replays it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.stream.fuzz.campaign import Finding


@dataclass
class Site:
    finding: Finding  # the smallest input so far
    count: int
    path: Path


class Findings:
    """Findings of one campaign, deduplicated by site and saved under ``directory``."""

    def __init__(self, directory: Path, seed: int) -> None:
        self.directory = directory
        self.seed = seed
        self.sites: dict[str, Site] = {}
        self._seen: set[int] = set()

    def add(self, finding: Finding) -> None:
        """Count and keep ``finding`` (once per input: a restarted worker runs some inputs again)."""
        if finding.input.index in self._seen:
            return
        self._seen.add(finding.input.index)
        key = finding.outcome.site
        site = self.sites.get(key)
        if site is not None:
            site.count += 1
            if len(finding.input.data) >= len(site.finding.input.data):
                return
            site.finding = finding
        else:
            slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{finding.outcome.kind.value} {key}").strip("-")[:120]
            site = self.sites[key] = Site(finding, 1, self.directory / f"{slug}.bin")
        self._save(site)

    def _save(self, site: Site) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        f = site.finding
        site.path.write_bytes(f.input.data)
        site.path.with_suffix(".txt").write_text(
            f"{f.outcome.kind.value}: {f.outcome.site}\n{f.outcome.detail}\n\n"
            f"input {f.input.index} of seed {self.seed} ({len(f.input.data)} bytes), {f.input.origin}: "
            f"{f.input.how}\nreplay: goldmig bench-fuzz --replay {site.path}\n\n{f.outcome.trace}"
        )

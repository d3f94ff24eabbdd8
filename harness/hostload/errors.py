"""The error of this package: the host's figures for a QEMU cannot be read (a harness error)."""

from __future__ import annotations

from harness.errors import HostError


class HostLoadError(HostError):
    """A QEMU's vCPU threads or its host's load could not be found or read; or a window was
    used in the wrong state."""

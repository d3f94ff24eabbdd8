"""libvirt's errors in libvirt's words: code and domain by name, and the message."""

from __future__ import annotations

import libvirt

_CODES = {getattr(libvirt, n): n for n in dir(libvirt) if n.startswith("VIR_ERR_")
          and n not in ("VIR_ERR_NONE", "VIR_ERR_WARNING", "VIR_ERR_ERROR")}
_DOMAINS = {getattr(libvirt, n): n for n in dir(libvirt) if n.startswith("VIR_FROM_")}
HARNESS_DOMAINS = frozenset(getattr(libvirt, n) for n in (
    "VIR_FROM_RPC", "VIR_FROM_REMOTE", "VIR_FROM_SSH", "VIR_FROM_AUTH", "VIR_FROM_LIBSSH"))
"""Where an error means the harness's transport between daemons broke, not QEMU or libvirt."""


def libvirt_words(exc: libvirt.libvirtError) -> str:
    """``message (VIR_ERR_X, VIR_FROM_Y)``: what libvirt said, and where it said it from."""
    code, domain = exc.get_error_code(), exc.get_error_domain()
    return (f"{exc.get_error_message()} ({_CODES.get(code, f'code {code}')}, "
            f"{_DOMAINS.get(domain, f'domain {domain}')})")


def from_transport(exc: libvirt.libvirtError) -> bool:
    return exc.get_error_domain() in HARNESS_DOMAINS

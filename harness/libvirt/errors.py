"""libvirt's errors in libvirt's words: code and domain by name, and the message."""

from __future__ import annotations

import libvirt

_CODES = {getattr(libvirt, n): n for n in dir(libvirt) if n.startswith("VIR_ERR_")
          and n not in ("VIR_ERR_NONE", "VIR_ERR_WARNING", "VIR_ERR_ERROR")}
_DOMAINS = {getattr(libvirt, n): n for n in dir(libvirt) if n.startswith("VIR_FROM_")}


def libvirt_words(exc: libvirt.libvirtError) -> str:
    """``message (VIR_ERR_X, VIR_FROM_Y)``: what libvirt said, and where it said it from."""
    code, domain = exc.get_error_code(), exc.get_error_domain()
    return (f"{exc.get_error_message()} ({_CODES.get(code, f'code {code}')}, "
            f"{_DOMAINS.get(domain, f'domain {domain}')})")


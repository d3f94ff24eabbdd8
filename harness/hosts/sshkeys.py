"""Throw-away SSH keys for namespace hosts: made per run, never reused, never written to ~/.ssh."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class KeyPair:
    """An Ed25519 key: private key file (OpenSSH format, mode 0600) and public key line."""

    private: Path
    public: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)


def generate(path: Path, comment: str) -> KeyPair:
    """A new Ed25519 key pair; the private key goes to ``path``, the public one to ``path.pub``."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode() + f" {comment}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private)
    path.with_name(path.name + ".pub").write_text(public + "\n")
    return KeyPair(path, public)


def fingerprint(public_line: str) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key line (``type base64 [comment]``)."""
    blob = base64.b64decode(public_line.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"

"""Hosts: where a build's QEMU processes run (local now; namespaces and SSH later)."""

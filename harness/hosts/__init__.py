"""Hosts: where a build's QEMU processes run.

``local`` (this machine, bwrap into the build's root), ``ssh`` (any SSH host,
driven with paramiko) and ``netns`` (a pair of network namespaces made by the
harness, each an SSH host in a build's root, joined by a veth link).
"""

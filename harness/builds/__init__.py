"""QEMU builds: what a build is (spec), how it is provisioned, what it supports."""

"""Nested KVM hosts: pairs of pseries VMs (L1) that run QEMU with KVM, booted under this
machine's QEMU (L0: TCG here, KVM with cap-nested-hv on a POWER machine)."""

"""Domain XML for the golden guest, from the same machine set-up the direct driver runs.

What libvirt has its own element for is said that way (machine type, POWER9
CPU, memory, vCPUs, kernel and initrd, the spapr capabilities TCG lacks, the
interrupt controller mode, the console, virtio-rng); a machine property
libvirt does not model (``x-vof``) goes through ``<qemu:commandline>``
as ``-machine key=value``, which QEMU merges into the machine's options. The
console is a unix-socket serial on the spapr VIO bus (hvc0), so the agent
protocol is the direct driver's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

from harness.errors import HarnessError
from harness.qemu.machine import MachineSetup

_FEATURES = {"cap-htm": "htm", "cap-ccf-assist": "ccf-assist",
             "cap-cfpc": "cfpc", "cap-sbbc": "sbbc", "cap-ibs": "ibs"}
"""spapr capabilities libvirt names under ``<features>`` (on/off ones take ``state``)."""
_ON_OFF = {"htm", "ccf-assist"}
_DEVICES = {"virtio-rng-pci": "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"}
"""``-device`` arguments of matrix.yaml the driver can say in libvirt's words."""


class UnsupportedSetup(HarnessError):
    """The set-up has something the libvirt driver cannot express (the cell is impossible)."""


@dataclass(frozen=True)
class DomainFiles:
    """The per-side paths a domain's XML names (rewritten for the destination)."""

    console: Path
    serial_log: Path


def domain_xml(name: str, uuid: str, setup: MachineSetup, files: DomainFiles) -> str:
    """The ``<domain>`` for ``setup``; :class:`UnsupportedSetup` names what cannot be said."""
    features, extra = [], []
    for key, value in setup.properties:
        if key in _FEATURES:
            tag = _FEATURES[key]
            attr = "state" if tag in _ON_OFF else "value"
            features.append(f"<{tag} {attr}={quoteattr(value)}/>")
        elif key == "ic-mode":
            features.append(f"<ioapic driver={quoteattr(value)}/>")
        else:
            extra.append(f"{key}={value}")
    devices = []
    for device in setup.devices:
        if device not in _DEVICES:
            raise UnsupportedSetup(f"the libvirt driver has no domain XML for -device {device}")
        devices.append(_DEVICES[device])
    vcpus = (f"<vcpu placement='static' current='{setup.smp}'>{setup.maxcpus}</vcpu>"
             if setup.maxcpus > setup.smp else f"<vcpu placement='static'>{setup.smp}</vcpu>")
    commandline = "".join(f"<qemu:arg value='-machine'/><qemu:arg value={quoteattr(arg)}/>"
                          for arg in extra)
    kind = "kvm" if setup.accel == "kvm" else "qemu"
    return f"""<domain type='{kind}' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>{setup.memory_mb}</memory>
  {vcpus}
  <os>
    <type arch='ppc64' machine={quoteattr(setup.machine)}>hvm</type>
    <kernel>{setup.kernel}</kernel>
    <initrd>{setup.initrd}</initrd>
    <cmdline>{setup.append}</cmdline>
  </os>
  <features>{''.join(features)}</features>
  <cpu mode='custom' match='exact' check='none'><model fallback='forbid'>{setup.cpu}</model></cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-ppc64</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
    <serial type='unix'>
      <source mode='bind' path={quoteattr(str(files.console))}/>
      <log file={quoteattr(str(files.serial_log))}/>
      <target type='spapr-vio-serial' port='0'/>
    </serial>
    {''.join(devices)}
  </devices>
  {f'<qemu:commandline>{commandline}</qemu:commandline>' if commandline else ''}
</domain>
"""

"""Domain XML for the golden guest, from the same machine set-up the direct driver runs.

What libvirt has its own element for is said that way (machine type, POWER9
CPU, memory, vCPUs, kernel and initrd, the spapr capabilities TCG lacks, the
interrupt controller mode, the console, virtio-rng); a machine property
libvirt does not model (``x-vof``) goes through ``<qemu:commandline>``
as ``-machine key=value``, which QEMU merges into the machine's options. The
console is a unix-socket serial on the spapr VIO bus (hvc0), so the agent
protocol is the direct driver's. Room for memory hotplug is ``<maxMemory
slots=..>`` with one NUMA cell, and a DIMM names that cell: on ppc64 libvirt
9.0 asks for neither (qemuDomainDefValidateMemoryHotplug exempts
ARCH_IS_PPC64), but 11.3 (since 9.6) adds a NUMA node itself when a domain
with ``<maxMemory>`` is defined (qemu_postparse.c qemuDomainDefNumaAutoAdd)
and then refuses a hotplugged DIMM without ``<node>`` ("target NUMA node
needs to be specified for memory device"). Said explicitly, both releases
run the same topology (one node, as the direct driver's guest has).

A migration's destination is defined by the source's live definition
(:func:`for_destination`), as libvirt itself sends it when not given one,
with only the per-host paths rewritten: what was plugged on the source
(a DIMM, at the slot and base libvirt gave it) travels with it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

from harness.errors import HarnessError
from harness.qemu.machine import Dimm, MachineSetup

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
ElementTree.register_namespace("qemu", QEMU_NS)
NODE = 0
"""The guest's one NUMA node, given when memory can be plugged (see the module's docstring)."""

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
    if setup.dimms:
        raise UnsupportedSetup("the libvirt driver starts no domain with a DIMM: a DIMM comes by "
                               "hotplug, and a destination gets it in the definition it migrates")
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
  {_max_memory(setup)}
  {vcpus}
  <os>
    <type arch='ppc64' machine={quoteattr(setup.machine)}>hvm</type>
    <kernel>{setup.kernel}</kernel>
    <initrd>{setup.initrd}</initrd>
    <cmdline>{setup.append}</cmdline>
  </os>
  <features>{''.join(features)}</features>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>{setup.cpu}</model>{_numa(setup)}
  </cpu>
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


def _max_memory(setup: MachineSetup) -> str:
    if setup.maxmem_mb is None:
        return ""
    return f"<maxMemory slots='{setup.memory_slots}' unit='MiB'>{setup.maxmem_mb}</maxMemory>"


def _numa(setup: MachineSetup) -> str:
    """One cell (:data:`NODE`) with every vCPU and the boot memory, where memory can be plugged."""
    if setup.maxmem_mb is None:
        return ""
    return (f"<numa><cell id='{NODE}' cpus='0-{setup.maxcpus - 1}' memory='{setup.memory_mb}' "
            f"unit='MiB'/></numa>")


def dimm_xml(dimm: Dimm, alias: str) -> str:
    """The ``<memory model='dimm'>`` device libvirt plugs into :data:`NODE`, named by the user
    alias ``alias``; libvirt chooses its backend, slot and base."""
    return (f"<memory model='dimm'><target><size unit='MiB'>{dimm.size_mb}</size>"
            f"<node>{NODE}</node></target>"
            f"<alias name={quoteattr(alias)}/></memory>")


def dimm_aliases(xml: str) -> set[str]:
    """The aliases of the DIMMs in a domain definition."""
    dimms = ElementTree.fromstring(xml).findall("devices/memory[@model='dimm']/alias")
    return {alias.get("name", "") for alias in dimms}


def for_destination(live: str, source: DomainFiles, destination: DomainFiles,
                    trace: tuple[str, ...]) -> str:
    """The source's live definition (``VIR_DOMAIN_XML_MIGRATABLE``) with the destination's
    console and log paths, and its QEMU told to trace ``trace`` (patterns, ``-trace``)."""
    dom = ElementTree.fromstring(live)
    for tag, attr, old, new in (("source", "path", source.console, destination.console),
                                ("log", "file", source.serial_log, destination.serial_log)):
        found = [e for e in dom.findall(f"devices/serial/{tag}") if e.get(attr) == str(old)]
        if not found:
            raise HarnessError(f"the source's live definition has no serial {tag} {attr}={old}")
        for element in found:
            element.set(attr, str(new))
    if trace:
        commandline = dom.find(f"{{{QEMU_NS}}}commandline")
        if commandline is None:
            commandline = ElementTree.SubElement(dom, f"{{{QEMU_NS}}}commandline")
        for pattern in trace:
            for value in ("-trace", f"enable={pattern}"):
                ElementTree.SubElement(commandline, f"{{{QEMU_NS}}}arg", value=value)
    return ElementTree.tostring(dom, encoding="unicode")

"""QEMU processes: command lines, the QMP monitor, the serial console."""

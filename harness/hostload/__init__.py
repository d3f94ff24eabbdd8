"""What the host did to the guest: how long a QEMU's vCPU threads waited for a host CPU.

A shared, loaded CI runner can keep a vCPU thread off the CPU for hundreds of milliseconds; a
guest tick then comes late although QEMU did nothing wrong. :class:`StarvationMeter` measures
that wait (the kernel's per-thread run-queue delay, ``schedstat``) over a window of the
scenario, and :func:`judge` says whether a bound was exceeded by more than it.

* :mod:`~harness.hostload.procfs`: parsing /proc's text (pure).
* :mod:`~harness.hostload.local`, :mod:`~harness.hostload.remote`: reading a QEMU's threads on
  this machine (local and namespace hosts) or over SSH (lab hosts).
* :mod:`~harness.hostload.meter`: meters, windows and the frozen :class:`Starvation`.
* :mod:`~harness.hostload.judge`: :func:`judge`, a bound against the starvation.
"""

# Nothing is imported here: the checks import :mod:`~harness.hostload.judge` alone, without the
# meters' host drivers (the matrix loader must not load the runtime).

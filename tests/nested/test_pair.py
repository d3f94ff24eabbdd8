"""The nested host pair as a run uses it: booted once, reused, replaced when a host died, and
gone (L0 processes and temp dir) when closed."""

from __future__ import annotations

import os
import signal

import pytest

from harness.hosts.ssh import SshHost
from harness.nested import pair as nested_pair
from harness.nested.image import ensure_host_image

pytestmark = pytest.mark.slow


def test_a_pair_is_reused_replaced_when_a_host_died_and_leaves_nothing() -> None:
    image = ensure_host_image()
    first, why = nested_pair.pair_for(image)
    assert why is None
    again, why = nested_pair.pair_for(image)
    assert again is first and why is None, "a healthy pair is reused"
    with SshHost(first.target("b")) as host:
        assert host.run_command(["test", "-c", "/dev/kvm"]).returncode == 0, "KVM on the L1"
        link = host.run_command(["busybox", "ping", "-c", "1", "-W", "5", first.hosts["a"].link_address])
        assert link.returncode == 0, f"the private link between the L1s: {link.stdout}{link.stderr}"

    os.killpg(first.hosts["b"].process.pid, signal.SIGKILL)
    first.hosts["b"].process.wait()
    replaced, why = nested_pair.pair_for(image)
    assert replaced is not first
    assert why is not None and "l1-b" in why and "exited" in why, why

    l0s = [l1.process for l1 in replaced.hosts.values()]
    replaced.close()
    assert all(p.poll() is not None for p in l0s) and not replaced.workdir.exists()
    assert not first.workdir.exists(), "the dead pair's temp dir went with it"

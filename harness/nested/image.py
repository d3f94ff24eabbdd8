"""The nested host image: what an L1 "POWER KVM host" VM boots, built here and cached.

An L1 boots the Debian kernel of the golden guest's ``debian`` image (the same pinned
package, which carries the KVM modules) with an initramfs that is a whole Debian bookworm
ppc64el system: QEMU (``qemu-system-ppc``, the host's KVM userspace), sshd and iproute2,
plus KVM-HV and virtio-net from the kernel package, with ``guests/nested-host/init`` as
PID 1. Inputs are pinned as the golden image's are: the suite and package list in
``guests/nested-host/recipe.json``, the kernel deb by the sha256 the golden manifest
records; the manifest names every package version. The image is cached under
``~/.cache/goldmig/nested/<key>`` (the key hashes the recipe files and the kernel), with
the SSH keys goldmig uses for it (made once per image, never written to ~/.ssh).

Why debootstrap ``--foreign`` and unpacking every .deb, not a configured root: this x86
machine cannot run ppc64el maintainer scripts without binfmt (not available here), and
a host that runs QEMU and sshd needs none of them; the accounts they would create are
written here. Why an initramfs: the kernel's virtio block driver is a module, and an
initramfs needs no second stage to mount a root.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness import cache, paths
from harness.builds.debian import DEFAULT_MIRROR
from harness.errors import BuildError
from harness.guest.image import GoldenImage, ensure_golden_image
from harness.hosts import sshkeys

RECIPE_DIR = paths.REPO_ROOT / "guests" / "nested-host"
RECIPE_FILES = ("recipe.json", "init", "inittab", "sshd_config")
IMAGE_FILES = ("initramfs.cpio", "manifest.json", "client_key", "host_key.pub")
SSHD_USER = "sshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n"

log = logging.getLogger("goldmig.nested")


@dataclass(frozen=True)
class HostImage:
    """A built nested host image: the kernel and initramfs an L1 boots, and its SSH keys."""

    kernel: Path
    initramfs: Path
    client_key: Path
    """goldmig's private key, authorised for root on every L1 of this image."""
    host_key: str
    """The L1s' sshd host key (``type base64``), for known_hosts."""
    manifest: dict[str, object]

    @property
    def image_id(self) -> str:
        return str(self.manifest["image_id"])

    @property
    def qemu_package(self) -> str:
        """The version of Debian's qemu-system-ppc in the image (the L1s' own QEMU)."""
        return str(dict(self.manifest["packages"])["qemu-system-ppc"])  # type: ignore[call-overload]


def ensure_host_image() -> HostImage:
    """The nested host image for the current recipe and golden kernel, built on first use
    (about a minute: debootstrap's downloads, unpacking, a 300 MB cpio)."""
    golden = ensure_golden_image(kernel="debian")  # its modules (kvm-hv) come with Debian's package
    key = _key(golden)
    directory = cache.ensure_dir(paths.cache_root() / "nested" / key, IMAGE_FILES,
                                 lambda target: _build(target, golden, key))
    manifest = json.loads((directory / "manifest.json").read_text())
    return HostImage(golden.kernel, directory / "initramfs.cpio", directory / "client_key",
                     (directory / "host_key.pub").read_text().strip(), manifest)


def _key(golden: GoldenImage) -> str:
    digest = hashlib.sha256()
    for name in RECIPE_FILES:
        digest.update(name.encode() + b"\0" + (RECIPE_DIR / name).read_bytes() + b"\0")
    digest.update(golden.image_id.encode())
    return digest.hexdigest()[:16]


def _build(target: Path, golden: GoldenImage, key: str) -> None:
    recipe = json.loads((RECIPE_DIR / "recipe.json").read_text())
    log.info("building the nested host image into %s", target)
    with tempfile.TemporaryDirectory(prefix=".nested-", dir=target.parent) as tmp:
        work = Path(tmp)
        root = work / "root"
        packages = _bootstrap(recipe, root)
        kernel_version = str(golden.manifest["kernel_version"])
        modules = _install_modules(golden, recipe["modules"], root, kernel_version)
        _install_busybox(golden, root)
        _configure(root)
        out = work / "image"
        out.mkdir()
        _keys(root, out)
        for pattern in recipe["drop"]:
            for path in root.glob(pattern):
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        _pack(root, out / "initramfs.cpio")
        manifest = {
            "format": 1, "image_id": f"nested-host-{recipe['suite']}-{key}",
            "suite": recipe["suite"], "arch": recipe["arch"], "kernel_version": kernel_version,
            "golden_image": golden.image_id, "modules": modules, "packages": packages,
            "initramfs_sha256": cache.sha256_file(out / "initramfs.cpio"),
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        out.rename(target)


def _bootstrap(recipe: dict[str, object], root: Path) -> dict[str, str]:
    """debootstrap's first stage, then every downloaded .deb unpacked; name -> version."""
    argv = ["debootstrap", "--foreign", f"--arch={recipe['arch']}", "--variant=minbase",
            f"--include={','.join(recipe['packages'])}",  # type: ignore[arg-type]
            str(recipe["suite"]), str(root), DEFAULT_MIRROR]
    _run(argv, "debootstrap of the nested host's root")
    packages = {}
    for deb in sorted((root / "var/cache/apt/archives").glob("*.deb")):
        name, version, _ = deb.name.split("_")
        packages[name] = version.replace("%3a", ":")
        _unpack(deb, root)
    return packages


def _unpack(deb: Path, root: Path) -> None:
    """A .deb's files into ``root``, keeping merged-/usr's directory symlinks (/bin -> usr/bin)."""
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root), "--keep-directory-symlink"], input=data, check=True)


def _golden_deb(golden: GoldenImage, role: str) -> Path:
    """The golden image's .deb of ``role`` (kernel, busybox), checked against its manifest."""
    packages: list[dict[str, str]] = golden.manifest.get("packages", [])
    entry = next((p for p in packages if p.get("role") == role), None)
    if entry is None:
        raise BuildError(f"nested host image: golden image {golden.image_id} names no {role} package "
                         "in its manifest; the nested hosts boot Debian's kernel image (guest.kernel "
                         "debian), whose manifest does")
    deb = paths.cache_root() / "debs" / entry["deb"]
    if not deb.is_file() or cache.sha256_file(deb) != entry["deb_sha256"]:
        raise BuildError(f"nested host image: the golden image's {role} package {deb} is missing or "
                         "changed; remove the golden image's cache directory "
                         f"(~/.cache/goldmig/guests) and run `goldmig guest` to fetch it again")
    return deb


def _install_modules(golden: GoldenImage, wanted: list[str], root: Path, version: str) -> list[str]:
    """The modules ``wanted`` (paths under lib/modules/<version>) and what they depend on, copied
    from the kernel package; their load order goes to /etc/goldmig/modules (dependencies first)."""
    with tempfile.TemporaryDirectory() as tmp:
        _unpack(_golden_deb(golden, "kernel"), Path(tmp))
        tree = Path(tmp) / "lib/modules" / version
        by_name = {p.stem.replace("-", "_"): p.relative_to(tree) for p in tree.rglob("*.ko")}
        order: list[str] = []

        def add(relative: str) -> None:
            if relative in order:
                return
            for dep in _depends(tree / relative):
                add(str(by_name[dep.replace("-", "_")]))
            order.append(relative)

        for relative in wanted:
            add(relative)
        for relative in order:
            (root / "lib/modules" / version / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tree / relative, root / "lib/modules" / version / relative)
    (root / "etc/goldmig").mkdir(parents=True, exist_ok=True)
    (root / "etc/goldmig/modules").write_text("\n".join(order) + "\n")
    return order


def _depends(module: Path) -> list[str]:
    """The modules ``module`` needs loaded first (its .modinfo ``depends=``)."""
    found = re.search(rb"(?:^|\0)depends=([^\0]*)", module.read_bytes())
    return [d for d in found.group(1).decode().split(",") if d] if found else []


def _install_busybox(golden: GoldenImage, root: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _unpack(_golden_deb(golden, "busybox"), Path(tmp))
        shutil.copy2(Path(tmp) / "bin/busybox", root / "usr/bin/busybox")


def _configure(root: Path) -> None:
    """What the skipped maintainer scripts and an init system would have set up."""
    for mountpoint in ("proc", "sys", "dev", "run", "tmp", "var/tmp"):
        path = root / mountpoint  # debootstrap --foreign leaves /proc a symlink to the host's
        if path.is_symlink():
            path.unlink()
        path.mkdir(exist_ok=True)
    base = root / "usr/share/base-passwd"
    (root / "etc/passwd").write_text((base / "passwd.master").read_text() + SSHD_USER)
    (root / "etc/group").write_text((base / "group.master").read_text())
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc/shadow").chmod(0o600)
    shutil.copy2(RECIPE_DIR / "init", root / "init")
    (root / "init").chmod(0o755)
    shutil.copy2(RECIPE_DIR / "inittab", root / "etc/inittab")
    shutil.copy2(RECIPE_DIR / "sshd_config", root / "etc/goldmig/sshd_config")
    (root / "etc/hostname").write_text("goldmig-l1\n")


def _keys(root: Path, out: Path) -> None:
    """The L1s' host key (in the image) and goldmig's client key (beside it, authorised)."""
    host = sshkeys.generate(out / "host_key", "goldmig-nested-host")
    shutil.move(host.private, root / "etc/goldmig/ssh_host_ed25519_key")
    (root / "etc/goldmig/ssh_host_ed25519_key").chmod(0o600)
    client = sshkeys.generate(out / "client_key", "goldmig")
    (root / "etc/goldmig/authorized_keys").write_text(client.public + "\n")


def _pack(root: Path, out: Path) -> None:
    """An uncompressed newc cpio: the kernel copies it into place faster than TCG gunzips it."""
    listing = subprocess.run(["find", ".", "-mindepth", "1"], cwd=root, capture_output=True,
                             text=True, check=True).stdout
    names = "\n".join(sorted(listing.splitlines())) + "\n"
    with out.open("wb") as f:
        subprocess.run(["cpio", "-o", "-H", "newc", "--reproducible", "--quiet"], cwd=root,
                       input=names.encode(), stdout=f, check=True)


def _run(argv: list[str], what: str) -> None:
    if shutil.which(argv[0]) is None:
        raise BuildError(f"{what}: {argv[0]} is not installed; run `make setup`")
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-6:]
        raise BuildError(f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n  "
                         + "\n  ".join(tail))

"""What a nested host (:mod:`harness.nested`) can run: the QEMU of its image, which is Debian
bookworm's for ppc64el (a build of kind host is that package here too)."""

NESTED_SUITE = "bookworm"
NESTED_WHY = ("nested hosts run the QEMU their image carries, Debian bookworm's qemu-system-ppc for "
              "ppc64el;")

"""One live migration end to end: transport, recording relay, QEMU's own figures."""

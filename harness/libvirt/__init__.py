"""The libvirt driver: each namespace host's own libvirtd runs and migrates the golden guest."""

"""Verification: run the artifact (natively or under qemu-user) and compare it with the source
framework's own runtime (the accuracy gate)."""

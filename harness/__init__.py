"""Build-and-test harness for the arm64 KVM series (see README.md)."""

"""The performance benchmark: timing harness, reference implementations, figures."""

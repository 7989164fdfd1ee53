"""Benchmarks: each one compares the service against a baseline measured in the same run."""

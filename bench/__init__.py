"""Benchmarks, each beside its baseline (bench/README.md); run as scripts."""

"""Tooling for the tests, the benchmarks and the docs, not shipped with the package: driving the
studio in a real browser (`browser`), and scratch copies of the repository with a preset of
parameters (`scratch`)."""

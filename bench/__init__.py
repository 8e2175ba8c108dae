"""Benchmarks: serving (HTTP, against peer servers), in-process, startup. See bench/README.md."""

"""Benchmarks: accuracy, serving (HTTP, against peer servers), in-process, startup, overload,
workers. Commands and last results: the README's Performance section."""

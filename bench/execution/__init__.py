"""Executors: `serial` and `process` on this machine, `ray` on a Ray cluster."""

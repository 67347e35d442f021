"""Data sets (registry, built-in and on-disk loaders), the split protocol, and the config entries
that name data sets and regimes."""

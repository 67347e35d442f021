"""Running a cell: its identity and seeds, its stages (fit, quality, train, evaluate), the tasks handed
to executors, the run folder, provenance and resource measurement."""

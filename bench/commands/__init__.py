"""The commands the CLI runs: run, plan, tune, list, bench-augment."""

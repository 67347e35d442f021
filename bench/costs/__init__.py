"""Cost estimates before a run: calibrated seconds per unit of work, and the plan built from the work
each stage declares (`augbench plan`)."""

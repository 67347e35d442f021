"""Optional experiment tracking of a run (MLflow: a parent run per `augbench run`, a nested one per
cell)."""

"""`augbench tune`: Optuna studies on validation data, the same trial budget for every strategy."""

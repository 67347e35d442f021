"""The protocols bundled with augbench, as YAML files beside this one. Find them with
``bench.config.bundled_configs()`` (importlib.resources), so that they load from a wheel too."""

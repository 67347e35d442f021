"""Helpers for tests: configs derived from the tiny protocol."""
import copy

import yaml

from conftest import TINY_CONFIG


def tiny_config_with(tmp_path, change: dict, name: str = "tiny") -> str:
    """Write the tiny config with ``change`` applied to its top-level fields; return its path."""
    data = copy.deepcopy(TINY_CONFIG)
    data.update(change)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def fast_params(name: str) -> dict:
    """Params that make a strategy fit in a moment (few generator steps)."""
    from strategies import STRATEGIES

    params = STRATEGIES.get(name).params
    if "generator_params" in params:
        return {"generator_params": {"steps": 20}}
    return {"steps": 20} if "steps" in params else {}

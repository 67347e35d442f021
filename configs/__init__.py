"""The protocols bundled with augbench, as YAML files beside this one, found through
importlib.resources so that they load from a wheel too."""

from importlib import resources
from importlib.abc import Traversable

DEFAULT = "quick"


def bundled() -> dict[str, Traversable]:
    """Name -> resource of every bundled config."""
    return {
        entry.name[:-5]: entry
        for entry in resources.files(__name__).iterdir()
        if entry.name.endswith(".yaml")
    }

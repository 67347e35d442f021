"""Name -> object registries, as in timm and torch-fidelity."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from bench.core.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection filled by the ``register`` decorator; duplicate names are an error."""

    def __init__(self, kind: str, plural: str | None = None):
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def register_class(self, name: str) -> Callable[[T], T]:
        """Class decorator: registers the class under ``name`` and sets its ``name`` to it."""

        def decorator(cls: T) -> T:
            cls.name = name
            return self.register(name)(cls)

        return decorator

    def get(self, name: str, field: str | None = None) -> T:
        """Look a name up; an unknown name is a UserError that lists the known ones."""
        if name not in self._items:
            where = f"{field}: " if field else ""
            raise UserError(
                f"{where}unknown {self.kind} {name!r}; known {self.plural}: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

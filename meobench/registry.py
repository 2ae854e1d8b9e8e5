"""Named registries of interchangeable implementations (MoE strategies, merge strategies)."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from meobench.errors import ConfigError

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """A dict of implementations by name whose ``register`` decorator rejects duplicate names."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        """What the entries are, for messages ("MoE strategy")."""

    def register(self, name: str) -> Callable[[T], T]:
        """Add the decorated implementation under ``name``; a second one of the same name raises."""

        def decorator(implementation: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self[name] = implementation
            return implementation

        return decorator

    def require(self, name: str) -> None:
        """Raise ConfigError naming the valid choices unless ``name`` is registered."""
        if name not in self:
            raise ConfigError(f"{self.kind} {name!r} is not registered; choose one of {', '.join(sorted(self))}.")

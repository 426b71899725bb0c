"""Streaming policies, one per module in this package, registered by name.

Each policy is a class with a `name`, an `Options` dataclass (typed options with defaults) and a
`decide(view)`; `make_policy("deadline")` builds one with default options, or pass an `Options`."""
from __future__ import annotations

from edgert.errors import InputError
from edgert.registry import Registry
from scheduler.policies.base import Decision, Pending, Policy, Run, Rung, SchedulerView, Skip, Wait

_POLICIES: Registry[Policy] = Registry("streaming policy", __name__, InputError)


def register_policy(cls: type[Policy]) -> type[Policy]:
    return _POLICIES.register(cls.name, cls)


def known_policies() -> list[str]:
    return _POLICIES.known()


def policy_class(name: str) -> type[Policy]:
    """The class registered as `name`; unknown names raise InputError listing the known ones."""
    return _POLICIES.lookup(name)


def make_policy(name: str, options: object | None = None) -> Policy:
    cls = policy_class(name)
    opts_cls = getattr(cls, "Options")
    if options is not None and not isinstance(options, opts_cls):
        raise InputError(f"policy {name} takes {opts_cls.__name__}, got {type(options).__name__}")
    return cls(options or opts_cls())       # type: ignore[call-arg]


__all__ = ["Decision", "Pending", "Policy", "Run", "Rung", "SchedulerView", "Skip", "Wait",
           "known_policies", "make_policy", "policy_class", "register_policy"]

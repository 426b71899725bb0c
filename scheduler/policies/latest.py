"""`latest`: whenever free, take the newest complete frame and drop the rest (a queue of depth 1).

Staleness stays bounded by about one runtime plus one period whatever the cost, at the price of
dropped frames; streaming perception's baseline "latest frame wins".
"""
from __future__ import annotations

from dataclasses import dataclass

from scheduler.policies import register_policy
from scheduler.policies.base import Decision, Policy, SchedulerView, newest_full_run


@register_policy
class Latest(Policy):
    name = "latest"

    @dataclass(frozen=True)
    class Options:
        pass

    def __init__(self, options: "Latest.Options"):
        self.options = options

    def decide(self, view: SchedulerView) -> Decision:
        return newest_full_run(view)

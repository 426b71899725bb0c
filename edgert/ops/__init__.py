"""numpy reference ops, one per module; see base.py."""
from edgert.ops.base import Op, get_op, known_ops, register

__all__ = ["Op", "get_op", "known_ops", "register"]

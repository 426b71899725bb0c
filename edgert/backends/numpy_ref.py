"""The numpy reference backend: the oracle every fast path is tested against.

It walks the (topologically sorted) graph and calls one op object per node; intermediate values are
dropped as soon as their last consumer has run so peak memory stays near the live set."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from edgert.backends.base import Backend, BackendOptions
from edgert.errors import EdgertError, InputError
from edgert.ir import Graph
from edgert.ops import get_op


def call_op(node, op, args: list) -> tuple[np.ndarray, ...]:
    try:
        return op.run(*args)
    except EdgertError:
        raise
    except (ValueError, IndexError, TypeError) as e:
        shapes = [None if a is None else tuple(np.shape(a)) for a in args]
        raise InputError(f"node {node.name!r} ({node.op}) failed on input shapes "
                         f"{shapes}: {e}") from None


class NumpyExecutable:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.ops = [get_op(n) for n in graph.nodes]       # raises UnsupportedOp up front
        # Nodes fed only by initializers (weight-only DequantizeLinear, shape arithmetic) run once
        # here, not on every inference.
        self.constants: dict[str, np.ndarray] = dict(graph.initializers)
        self._live = []
        for node, op in zip(graph.nodes, self.ops):
            if node.inputs and all(not i or i in self.constants for i in node.inputs):
                outs = call_op(node, op, [self.constants[i] if i else None for i in node.inputs])
                self.constants.update((o, v) for o, v in zip(node.outputs, outs) if o)
            else:
                self._live.append((node, op))
        last_use: dict[str, int] = {}
        for i, (n, _) in enumerate(self._live):
            for name in n.inputs:
                if name:
                    last_use[name] = i
        keep = {o.name for o in graph.outputs} | set(self.constants)
        self._free_after: list[list[str]] = [[] for _ in self._live]
        for name, i in last_use.items():
            if name not in keep:
                self._free_after[i].append(name)

    def run(self, feeds: dict[str, np.ndarray], capture: set[str] | None = None
            ) -> dict[str, np.ndarray]:
        """Run the graph; names in `capture` (intermediate values) are returned besides the outputs."""
        env: dict[str, np.ndarray] = dict(self.constants)
        captured: dict[str, np.ndarray] = {}
        env.update(feeds)
        for i, (node, op) in enumerate(self._live):
            try:
                args = [env[name] if name else None for name in node.inputs]
            except KeyError as e:
                raise InputError(f"node {node.name!r} ({node.op}) needs {e.args[0]!r}, "
                                 f"which nothing produced") from None
            outs = call_op(node, op, args)
            for name, val in zip(node.outputs, outs):
                if name:
                    env[name] = val
                    if capture and name in capture:
                        captured[name] = val
            for name in self._free_after[i]:
                env.pop(name, None)
        result = {o.name: env[o.name] for o in self.graph.outputs}
        result.update(captured)
        for name in (capture or ()):
            if name not in result and name in self.constants:
                result[name] = self.constants[name]
        return result


class NumpyBackend(Backend):
    name: ClassVar[str] = "numpy"

    def prepare(self, graph: Graph, options: BackendOptions) -> NumpyExecutable:
        return NumpyExecutable(graph)


BACKEND = NumpyBackend

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


class NumpyExecutable:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.ops = [get_op(n) for n in graph.nodes]       # raises UnsupportedOp up front
        last_use: dict[str, int] = {}
        for i, n in enumerate(graph.nodes):
            for name in n.inputs:
                if name:
                    last_use[name] = i
        keep = {o.name for o in graph.outputs} | set(graph.initializers)
        self._free_after: list[list[str]] = [[] for _ in graph.nodes]
        for name, i in last_use.items():
            if name not in keep:
                self._free_after[i].append(name)

    def run(self, feeds: dict[str, np.ndarray], capture: set[str] | None = None
            ) -> dict[str, np.ndarray]:
        """Run the graph; names in `capture` (intermediate values) are returned besides the outputs."""
        env: dict[str, np.ndarray] = dict(self.graph.initializers)
        captured: dict[str, np.ndarray] = {}
        env.update(feeds)
        for i, (node, op) in enumerate(zip(self.graph.nodes, self.ops)):
            try:
                args = [env[name] if name else None for name in node.inputs]
            except KeyError as e:
                raise InputError(f"node {node.name!r} ({node.op}) needs {e.args[0]!r}, "
                                 f"which nothing produced") from None
            try:
                outs = op.run(*args)
            except EdgertError:
                raise
            except (ValueError, IndexError, TypeError) as e:
                shapes = [None if a is None else tuple(np.shape(a)) for a in args]
                raise InputError(f"node {node.name!r} ({node.op}) failed on input shapes "
                                 f"{shapes}: {e}") from None
            for name, val in zip(node.outputs, outs):
                if name:
                    env[name] = val
                    if capture and name in capture:
                        captured[name] = val
            for name in self._free_after[i]:
                env.pop(name, None)
        result = {o.name: env[o.name] for o in self.graph.outputs}
        result.update(captured)
        return result


class NumpyBackend(Backend):
    name: ClassVar[str] = "numpy"

    def prepare(self, graph: Graph, options: BackendOptions) -> NumpyExecutable:
        return NumpyExecutable(graph)


BACKEND = NumpyBackend

"""`check_graph(graph) -> GraphPlan`: the one validation every backend relies on.

A package whose hashes are valid can still carry a manifest that a producer bug, a foreign tool or
an attacker wrote.  Before any backend prepares a graph, this module checks

* the graph: unique input / output names, declared shapes within the dim and size caps, node
  references (the reader's `check_graph_refs`);
* every node against its op's declaration (edgert/ops/<op>.py: `ATTRS`, `INPUTS`, `OUTPUTS`):
  the op exists, input and output counts, required inputs present, every attribute's name, type,
  range and list length;
* static shapes and dtypes, propagated from the declared inputs through each op's `infer`, with
  small constant sub-graphs (shape arithmetic) folded by the oracle's own ops: a node that cannot be
  valid, or whose output (or scratch) would exceed `max_value_bytes` even at the smallest input
  the graph admits, raises GraphError naming the node.

`GraphPlan.check_feeds` repeats the propagation with the concrete input shapes of a run (cached per
shape signature), so no backend is ever asked to allocate past the budget.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from edgert import format as F
from edgert.errors import EdgertError, GraphError, InputError
from edgert.ir import Graph, Node
from edgert.ops import get_op
from edgert.ops._schema import MAX_DIM, Val, fmt, of_array
from edgert.ops.base import Op


@dataclass
class CheckOptions:
    max_value_bytes: int = F.DEFAULT_MAX_VALUE_BYTES   # any one intermediate or op scratch buffer
    fold_max_elements: int = 1 << 16                  # constant sub-graphs up to this size are folded


def _check_value_infos(graph: Graph, budget: int) -> None:
    for kind, vis in (("input", graph.inputs), ("output", graph.outputs)):
        names = [v.name for v in vis]
        if len(set(names)) != len(names):
            raise GraphError(f"graph {graph.name!r}: duplicate {kind} names")
        for v in vis:
            if not v.name:
                raise GraphError(f"graph {graph.name!r}: an {kind} has an empty name")
            for d in v.shape:
                if isinstance(d, int) and not 0 <= d <= MAX_DIM:
                    raise GraphError(f"graph {graph.name!r}: {kind} {v.name!r} shape {fmt(v.shape)} "
                                     f"has a dim outside [0, {MAX_DIM}]")
            item = np.dtype(F.DTYPES[v.dtype]).itemsize if v.dtype in F.DTYPES else 1
            n = item
            for d in v.shape:
                n *= d if isinstance(d, int) else 1
            if n > budget:
                raise GraphError(f"graph {graph.name!r}: {kind} {v.name!r} shape {fmt(v.shape)} "
                                 f"needs {n} bytes, over the budget max_value_bytes={budget}")
    clash = {v.name for v in graph.inputs} & set(graph.initializers)
    if clash:
        raise GraphError(f"graph {graph.name!r}: {sorted(clash)[0]!r} is both an input and a tensor")


def _check_node_io(node: Node, op: Op) -> None:
    lo, hi = op.INPUTS
    n = len(node.inputs)
    if not lo <= n <= hi:
        want = f"{lo}" if lo == hi else f"{lo}..{hi}"
        raise op.bad(f"has {n} inputs, the op takes {want}")
    for i in range(lo):
        if not node.inputs[i] and i not in op.OPTIONAL_INPUTS:
            raise op.bad(f"required input {i} is omitted")
    lo, hi = op.OUTPUTS
    n = len(node.outputs)
    if not lo <= n <= hi:
        want = f"{lo}" if lo == hi else f"{lo}..{hi}"
        raise op.bad(f"has {n} outputs, the op gives {want}")
    if not node.outputs[0]:
        raise op.bad("its first output has no name")


def _call(op: Op, args: list) -> tuple[np.ndarray, ...]:
    from edgert.backends.numpy_ref import call_op
    return call_op(op.node, op, args)


class GraphPlan:
    """A checked graph: its op objects and the statically inferred Val of every value."""

    def __init__(self, graph: Graph, ops: list[Op], options: CheckOptions):
        self.graph, self.ops, self.options = graph, ops, options
        self.constants = {k: of_array(v) for k, v in graph.initializers.items()}
        self.vals: dict[str, Val] = {}
        self._seen: OrderedDict[tuple, None] = OrderedDict()

    def propagate(self, inputs: dict[str, Val]) -> dict[str, Val]:
        budget = self.options.max_value_bytes
        vals: dict[str, Val] = dict(self.constants)
        vals.update(inputs)
        for node, op in zip(self.graph.nodes, self.ops):
            ins = [vals[i] if i else None for i in node.inputs]
            outs = op.infer(ins)
            if len(outs) < len(node.outputs):
                raise op.bad(f"infer gave {len(outs)} outputs for {len(node.outputs)}")   # an op bug
            for name, v in zip(node.outputs, outs):
                if not name:
                    continue
                if v.shape is not None:
                    for d in v.shape:
                        if d is not None and not 0 <= d <= MAX_DIM:
                            raise op.bad(f"output {name!r} would have shape {fmt(v.shape)}")
                need = v.min_bytes()
                if need > budget:
                    raise op.bad(f"output {name!r} of shape {fmt(v.shape)} needs {need} bytes, "
                                 f"over the budget max_value_bytes={budget}")
            scratch = op.scratch(ins, outs)
            if scratch > budget:
                raise op.bad(f"needs {scratch} bytes of scratch, over the budget "
                             f"max_value_bytes={budget}")
            if self._foldable(ins, outs):
                folded = _call(op, [None if v is None else v.value for v in ins])
                outs = [of_array(a) for a in folded]
            for name, v in zip(node.outputs, outs):
                if name:
                    vals[name] = v
        return vals

    def _foldable(self, ins: list[Val | None], outs: list[Val]) -> bool:
        if not ins or any(v is not None and v.value is None for v in ins):
            return False
        if any(not v.known for v in outs):
            return False
        return sum(v.min_elements() for v in outs) <= self.options.fold_max_elements

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Propagate the concrete shapes of one run (checked feeds); InputError when they cannot
        run or would exceed the budget.  Each shape signature is checked once."""
        key = tuple((k, a.shape) for k, a in sorted(feeds.items()))
        if key in self._seen:
            self._seen.move_to_end(key)
            return
        try:
            self.propagate({k: Val(a.dtype.name, tuple(a.shape)) for k, a in feeds.items()})
        except GraphError as e:
            shapes = ", ".join(f"{k} {tuple(a.shape)}" for k, a in sorted(feeds.items()))
            raise InputError(f"inputs of shape {shapes} cannot run: {e}") from None
        self._seen[key] = None
        if len(self._seen) > 32:
            self._seen.popitem(last=False)


def check_graph(graph: Graph, options: CheckOptions | None = None) -> GraphPlan:
    """Validate `graph` completely (see the module doc); GraphError / UnsupportedOp name the node."""
    from edgert.package.reader import check_graph_refs

    options = options or CheckOptions()
    if len(graph.nodes) > F.MAX_NODES:
        raise GraphError(f"graph {graph.name!r} has {len(graph.nodes)} nodes (at most {F.MAX_NODES})")
    _check_value_infos(graph, options.max_value_bytes)
    try:
        check_graph_refs(graph.name, [v.name for v in graph.inputs], graph.initializers,
                         [(n.name, n.inputs, n.outputs) for n in graph.nodes],
                         [v.name for v in graph.outputs])
    except EdgertError as e:
        raise GraphError(str(e)) from None
    ops = []
    for node in graph.nodes:
        op = get_op(node)                 # UnsupportedOp for an unknown op; attrs checked here
        _check_node_io(node, op)
        ops.append(op)
    plan = GraphPlan(graph, ops, options)
    inputs = {v.name: Val(v.dtype, tuple(d if isinstance(d, int) else None for d in v.shape))
              for v in graph.inputs}
    plan.vals = plan.propagate(inputs)
    return plan

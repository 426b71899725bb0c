"""Remove nodes none of whose outputs is read (or is a graph output), then unused initializers.

Also drops `metadata["value_shapes"/"value_dtypes"]` entries of tensors that no longer exist."""
from __future__ import annotations

from converters.passes._util import output_names
from edgert.ir import Graph


def run(graph: Graph) -> Graph:
    needed = set(output_names(graph))
    kept = []
    for node in reversed(graph.nodes):
        if any(o and o in needed for o in node.outputs):
            kept.append(node)
            needed.update(x for x in node.inputs if x)
    graph.nodes = kept[::-1]
    graph.initializers = {k: v for k, v in graph.initializers.items() if k in needed}
    live = needed | {o for n in graph.nodes for o in n.outputs if o} | {vi.name for vi in graph.inputs}
    for key in ("value_shapes", "value_dtypes"):
        table = graph.metadata.get(key)
        if isinstance(table, dict):
            graph.metadata[key] = {k: v for k, v in table.items() if k in live}
    return graph

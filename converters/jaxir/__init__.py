"""The float IR in JAX, for converter-side optimisation that needs gradients (block reconstruction,
Hessian traces).  Converter-only: it needs the `train` extra (JAX on CPU); the runtime never imports it.

`run_nodes(nodes, env, consts, hooks)` evaluates IR nodes in order: tensors in `env` are JAX arrays,
`consts` are the graph's initializers (numpy, static under `jax.jit`, so shape inputs of Reshape /
Slice / Resize stay concrete).  A node whose inputs are all constant is folded with the numpy oracle
(edgert.ops), which is also what defines the semantics every JAX op here is tested against.  `hooks`
lets a caller replace a layer's weight (learned rounding), a node's computation (a quantized layer as
the runtime runs it) or a produced tensor (fake-quantizing an activation), without copying the graph.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edgert.errors import UnsupportedOp
from edgert.ir import Node


@dataclass
class Hooks:
    """Optional per-node overrides; each returns its value unchanged when it has nothing to do."""
    weight: Callable[[Node, int, Any], Any] | None = None    # (node, input index, const) -> value
    output: Callable[[str, Any], Any] | None = None          # (tensor, value) -> value
    node: Callable[[Node, list], tuple | None] | None = None  # (node, inputs) -> outputs, or None: as usual


def supported(node: Node) -> bool:
    from converters.jaxir.ops import OPS
    return node.op in OPS


def run_nodes(nodes: list[Node], env: dict[str, Any], consts: dict[str, np.ndarray],
              hooks: Hooks | None = None) -> dict[str, Any]:
    """Evaluate `nodes` (topologically ordered) on `env`; returns env extended with their outputs."""
    from converters.jaxir.ops import OPS, fold_const

    hooks = hooks or Hooks()
    env = dict(env)
    for node in nodes:
        ins = []
        for i, name in enumerate(node.inputs):
            if not name:
                ins.append(None)
                continue
            if name in env:
                v = env[name]
            elif name in consts:
                v = consts[name]
                if hooks.weight is not None:
                    v = hooks.weight(node, i, v)
            else:
                raise UnsupportedOp(f"node {node.name!r} reads {name!r}, which nothing computed")
            ins.append(v)
        outs = None if hooks.node is None else hooks.node(node, ins)
        if outs is not None:
            pass
        elif all(v is None or isinstance(v, np.ndarray) for v in ins):
            outs = fold_const(node, ins)
        else:
            fn = OPS.get(node.op)
            if fn is None:
                raise UnsupportedOp(f"op {node.op!r} (node {node.name!r}) has no JAX lowering")
            outs = fn(node, ins)
        for name, v in zip(node.outputs, outs):
            if name:
                env[name] = v if hooks.output is None else hooks.output(name, v)
    return env


__all__ = ["Hooks", "run_nodes", "supported"]

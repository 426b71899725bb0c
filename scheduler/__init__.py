"""The streaming scheduler for multi-camera BEV perception (issue 13, section 3 and the metrics of 4).

`run_stream(samples, stages, policy, StreamOptions(...)) -> StreamResult` streams rig samples through
a model split into stages (scheduler/stages.py) under a policy (scheduler/policies/, by name with
`make_policy`) on a virtual clock; `evaluate(result, offline) -> StreamMetrics` scores it as streaming
AP does.  Modules import only numpy and edgert; nothing heavy."""

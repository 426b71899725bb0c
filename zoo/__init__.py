"""Example models of edgert: their training and export code (the converter-side `train` extra).

Kept apart from the runtime (`edgert`) and the converter library (`converters`): nothing in `edgert`
imports from here, and JAX is imported only by the training modules.
"""

"""Draft heads for speculative decoding (Medusa-1 style), trained by self-distillation.

  data.py   the model's own hidden states and greedy tokens on corpus windows (numpy + the runtime)
  train.py  the heads and their training loop (JAX + optax: the `train` extra; imported lazily)
  store.py  a new package = the original one + the `llm/heads` and `llm/heads.bin` extra sections

The runtime side (reading the sections, numpy top-k) is edgert/llm/heads.py; it never imports JAX.
"""
from converters.llm_heads.data import DistillData, DistillOptions, distill, split_corpus

__all__ = ["DistillData", "DistillOptions", "distill", "split_corpus", "train_heads", "TrainOptions",
           "TrainReport", "store_heads"]


def __getattr__(name: str):
    # train.py needs JAX, store.py the package writer: import them only when asked for
    if name in ("train_heads", "TrainOptions", "TrainReport", "HeadsModel"):
        from converters.llm_heads import train
        return getattr(train, name)
    if name == "store_heads":
        from converters.llm_heads.store import store_heads
        return store_heads
    raise AttributeError(name)

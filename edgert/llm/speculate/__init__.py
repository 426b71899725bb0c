"""Speculative decoding: draft token trees, verify them in one decoder step, keep the longest accepted
path.  `tree.py` (the tree, its mask and positions), `verify.py` (greedy acceptance and the
distribution-preserving rejection scheme for sampling), `lookup.py` (prompt-lookup n-gram drafter),
`decoder.py` (the loop: draft, verify, commit the accepted path's KV entries)."""

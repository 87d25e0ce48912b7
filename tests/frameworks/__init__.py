"""Test-only reference translations of a cnnspec graph into real Keras and PyTorch models.

They read each node's layer arguments and its inputs, never the checker's computed shapes or
parameter counts, so the frameworks compute those independently and the tests compare.
"""

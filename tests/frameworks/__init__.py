"""Test-only reference translations of a cnnspec graph into real Keras and PyTorch models.

They read each node's layer arguments and its inputs, never the checker's computed shapes or
parameter counts, so the frameworks compute those independently and the tests compare.
"""

import os

# Keep TensorFlow's start-up chatter (no GPU, oneDNN notes) out of the test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

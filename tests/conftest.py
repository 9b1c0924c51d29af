"""Test-wide settings: one torch thread (two ran 10-60x slower on the 2-core box), offline hubs."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("MPLBACKEND", "Agg")
# maps and converted models go to a per-session folder, never the user's cache
os.environ.setdefault("BRAINRL_CACHE", tempfile.mkdtemp(prefix="brainrl-test-cache-"))

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

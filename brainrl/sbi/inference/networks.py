"""Keras layers of the SBI estimator. Imports bayesflow at module level, so import this module only
lazily (through ``brainrl.sbi.inference.estimator.import_bayesflow``), never from package ``__init__``."""

from __future__ import annotations

import keras
from bayesflow.networks import SummaryNetwork
from bayesflow.utils.serialization import serializable


@serializable("brainrl.sbi")
class FrameMLPSummary(SummaryNetwork):
    """Summary h(X) of sbi-paper.md (Appendix B) on already-projected frames (B, T, k) with a mask (B, T).

    Per frame: LayerNorm → Dense(hidden, GELU) → Dropout → Dense(hidden) → Dropout, plus a linear skip
    from the input width; then the masked mean over valid frames; then the head LayerNorm →
    Dense(hidden, GELU) → Dropout → Dense(summary_dim). Padded frames cannot leak into the summary.
    """

    def __init__(self, hidden: int = 128, summary_dim: int = 128, dropout: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.summary_dim, self.dropout = int(hidden), int(summary_dim), float(dropout)
        self.frame_norm = keras.layers.LayerNormalization()
        self.frame_in = keras.layers.Dense(self.hidden, activation="gelu")
        self.frame_drop1 = keras.layers.Dropout(self.dropout)
        self.frame_out = keras.layers.Dense(self.hidden)
        self.frame_drop2 = keras.layers.Dropout(self.dropout)
        self.skip = keras.layers.Dense(self.hidden)
        self.head_norm = keras.layers.LayerNormalization()
        self.head_in = keras.layers.Dense(self.hidden, activation="gelu")
        self.head_drop = keras.layers.Dropout(self.dropout)
        self.head_out = keras.layers.Dense(self.summary_dim)
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        return None  # the mask is consumed by the pooling; nothing downstream needs it

    def call(self, x, training=False, mask=None, **kwargs):
        h = self.frame_norm(x)
        h = self.frame_drop1(self.frame_in(h), training=training)
        h = self.frame_drop2(self.frame_out(h), training=training)
        h = h + self.skip(x)
        if mask is None:
            pooled = keras.ops.mean(h, axis=1)
        else:
            m = keras.ops.expand_dims(keras.ops.cast(mask, h.dtype), -1)
            pooled = keras.ops.sum(h * m, axis=1) / keras.ops.maximum(keras.ops.sum(m, axis=1), 1.0)
        z = self.head_in(self.head_norm(pooled))
        return self.head_out(self.head_drop(z, training=training))

    def get_config(self):
        base = super().get_config()
        return base | {"hidden": self.hidden, "summary_dim": self.summary_dim, "dropout": self.dropout}

"""Double of ``tribev2.main``: the experiment's data side and the per-prepare model freeing.

Like the real module, ``Data.get_loaders`` loads each feature model lazily during ``prepare`` and then
calls the module-global ``_free_extractor_model`` on it, so the next call reloads it unless that
function is replaced. The text extractor is the neuralset double's ``HuggingFaceText`` with TRIBE's
settings (batch_size 4, layers [0.5, 0.75, 1.0] group means, cache_n_layers 20); the audio one is a
stub whose ``LOADS`` counts loads. ``neuralset.extractors.text.MODEL_LOADS`` counts text-model loads.
"""

from __future__ import annotations

import collections
import dataclasses
import math

import torch
from neuralset.extractors.text import HuggingFaceText

LOADS: collections.Counter = collections.Counter()

N_VERTICES = 20484
TR = 1.0
WINDOW_TRS = 100  # duration_trs: 100 s windows, stride 100 s, no overlap
TEXT_MODEL_NAME = "meta-llama/Llama-3.2-3B"  # from_pretrained swaps in a tiny local random Llama


class FeatureExtractor:
    """Stands in for neuralset's Wav2VecBert: a lazily loaded ``model`` property."""

    def __init__(self, name: str, device: str = "cuda"):
        self.name = name
        self.device = device

    @property
    def model(self) -> torch.nn.Module:
        if not hasattr(self, "_model"):
            LOADS[self.name] += 1
            self._model = torch.nn.Linear(4, 4).to(torch.bfloat16)  # transformers 5 loads bf16 by default
        return self._model

    def prepare(self, events) -> None:
        self.model  # noqa: B018 - loading is the side effect


def _free_extractor_model(extractor) -> None:
    """Deletes the extractor's model after prepare, as the real one does."""
    if isinstance(getattr(extractor, "_model", None), torch.nn.Module):
        del extractor._model


@dataclasses.dataclass
class Segment:
    """Mirrors neuralset's Segment: a window on one timeline."""

    start: float
    duration: float
    timeline: str
    n_events: int = 0

    @property
    def stop(self) -> float:
        return self.start + self.duration

    def copy(self, offset: float = 0.0, duration: float | None = None) -> "Segment":
        return Segment(self.start + offset, self.duration if duration is None else duration, self.timeline)


class Data:
    """Holds the extractors and loader settings that ``config_update`` can override."""

    def __init__(self):
        self.text_feature = HuggingFaceText(
            model_name=TEXT_MODEL_NAME, device="cuda", batch_size=4, layers=[0.5, 0.75, 1.0],
            layer_aggregation="group_mean", cache_n_layers=20,
        )
        self.audio_feature = FeatureExtractor("audio")
        self.batch_size = 8
        self.num_workers = 20
        self.TR = TR

    def get_loaders(self, events, split_to_build: str = "all") -> dict[str, list[Segment]]:
        for extractor in (self.text_feature, self.audio_feature):
            extractor.prepare(events)
            _free_extractor_model(extractor)  # module-global lookup, like the real code
        windows = []
        for timeline, group in events.groupby("timeline", sort=False):
            stop = float((group["start"] + group["duration"]).max())
            n_windows = max(1, math.ceil(stop / (WINDOW_TRS * TR) - 1e-9))
            windows.extend(Segment(k * WINDOW_TRS * TR, WINDOW_TRS * TR, str(timeline)) for k in range(n_windows))
        return {split_to_build: windows}


class TribeExperiment:
    """Only what TribeModel uses: ``data`` and the loaded ``_model``."""

    def __init__(self, **config):
        self.config = config
        self.data = Data()
        self._model = None

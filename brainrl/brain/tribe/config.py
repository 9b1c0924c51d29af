"""Settings of the TRIBE v2 backend: everything that changes a prediction is here and in identity()."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

#: Hugging Face repo and snapshot that the demo notebook and the anchor's logs load (tribev2.md).
DEFAULT_REPO_ID = "facebook/tribev2"
DEFAULT_REVISION = "f894e783020944dcd96e5568550afe2aa9743f9f"

SPEECH_PATHS = ("fast", "reference")
#: "one-pass": one causal pass per text inside TRIBE's text extractor; "reference": TRIBE's per-word passes.
TEXT_FEATURE_MODES = ("one-pass", "reference")
#: "batched": the filter bank and w2v-bert for many clips per forward, inside TRIBE's audio extractor
#: (batched_audio.py); "reference": TRIBE's one clip at a time.
AUDIO_FEATURE_MODES = ("batched", "reference")
#: Word contexts on the fast speech path: "brainrl" (natural text, ≤ max_context_words words) or "tribe"
#: (TRIBE's own transforms: spaCy sentences, .capitalize(), unmatched words removed; needs en_core_web_lg)
CONTEXT_MODES = ("brainrl", "tribe")
DTYPES = ("float32", "bfloat16")
#: The parts of TRIBE's computation ``float32_parts`` can keep in float32 under ``dtype="bfloat16"``: the text
#: model (Llama), the audio model (w2v-bert) and the fusion model (TRIBE's own transformer and head).
PRECISION_PARTS = ("text", "audio", "fusion")
#: float32 matrix products during a predict call (``torch.backends.cuda.matmul``): "highest" in true float32,
#: "high" on TF32 tensor cores (10-bit mantissa inputs, float32 accumulation and activations), as
#: ``torch.set_float32_matmul_precision`` names them.
MATMUL_PRECISIONS = ("highest", "high")
#: How a predict call reaches TRIBE's fusion model: "tribe" through ``TribeModel.predict`` (its events
#: DataFrame, exca caches and data loader); "direct" builds the same input tensors from the stimuli (direct.py).
PREDICT_PATHS = ("tribe", "direct")
#: Speech engines whose words are WhisperX transcripts of gTTS audio (the reference path).
REFERENCE_SPEECH_ENGINES = ("gtts-whisperx",)
#: Devices brainrl accepts. neuralset's extractors accept only auto|cpu|cuda|accelerate, so "cuda:N" is run
#: as "cuda" inside ``torch.cuda.device(N)`` (engine.py).
DEVICE_PATTERN = re.compile(r"^(cpu|auto|cuda(:[0-9]+)?)$")


@dataclass
class TribeConfig:
    """How to load and run TRIBE v2.

    ``speech_path``: "fast" feeds brainrl's own words and timings as Word rows with contexts built here
    (tribev2.md section 1.5, path C); "reference" expects gTTS + WhisperX stimuli and lets TRIBE's own
    transforms rebuild sentences and contexts (path A). ``dtype``: float32 is the reference; bfloat16
    loads the feature models in bfloat16 (as transformers 5 loads Llama from the hub, the regime of Meta's
    demo), runs TRIBE's fusion model under bf16 autocast and hands float32 arrays back; it changes the
    numbers, so it needs ``allow_bf16=True`` after ``brainrl tribe parity`` against float32.
    ``float32_parts``: under bfloat16, the parts (of ``PRECISION_PARTS``) that stay in float32, so the
    error can be traded against speed part by part (``scripts/bench_tribe.py --bf16-parts-sweep`` measures both).
    ``matmul_precision``: "highest" (the reference) or "high" (TF32 for the float32 parts' matrix products on
    CUDA; it changes the numbers, so like bf16 it is checked against "highest" before use).
    ``text_features``: "one-pass" computes TRIBE's Word features in one causal pass per text, batched
    (``text_batch_size`` texts per pass); "reference" keeps TRIBE's one pass per word. None picks
    "one-pass" for the fast speech path and "reference" for the reference one.

    ``cache_folder``: TRIBE's feature cache (exca, on disk) and brainrl's content-addressed audio copies;
    None means ``$BRAINRL_CACHE/tribe``. It grows by about 246 KB of text features per word for
    Llama-3.2-3B (20 cached layers x 3,072 float32) plus w2v-bert features (about 8 MB per 40 s clip) and the WAV copy per
    clip, about 33 MB per 100-word completion (docs/tribe.md), so it is capped: when it passes ``cache_max_gb``
    after a predict call, the engine empties it (disk and RAM). ``cache_max_gb=0`` keeps TRIBE's features in
    RAM only (no feature file, no per-item sqlite claim on disk) and drops them after every call (nothing
    reused; only the WAV copies touch the disk). ``device``: cpu, cuda, cuda:N or auto.
    """

    repo_id: str = DEFAULT_REPO_ID
    revision: str = DEFAULT_REVISION
    checkpoint_dir: str | None = None  # a local folder with config.yaml + best.ckpt (skips the hub)
    checkpoint_name: str = "best.ckpt"
    cache_folder: str | None = None  # TRIBE's feature cache and brainrl's content-addressed audio
    device: str = "cuda"
    dtype: str = "float32"
    allow_bf16: bool = False
    float32_parts: tuple[str, ...] = ()  # under bfloat16: "text" | "audio" | "fusion" kept in float32
    matmul_precision: str = "highest"  # "highest" | "high" (TF32 float32 matmuls on CUDA)
    speech_path: str = "fast"
    max_context_words: int = 1024  # TRIBE's AddContextToWords window (words, not tokens)
    max_stimuli_per_call: int = 32  # stimuli per TribeModel.predict call (each one a timeline)
    window_batch_size: int = 32  # 100 s windows per fusion-model batch (TRIBE's data.batch_size)
    config_update: dict[str, Any] = field(default_factory=dict)  # extra TRIBE config overrides
    text_features: str | None = None  # "one-pass" | "reference"; None: by speech_path
    text_batch_size: int = 32  # texts per one-pass forward (does not change results)
    audio_features: str = "batched"  # "batched" | "reference" (TRIBE's one clip per w2v-bert forward)
    audio_batch_size: int = 16  # clips per batched w2v-bert forward (8 -> 16: 29 -> 24 ms per completion, H200)
    contexts: str = "brainrl"  # fast path: "brainrl" | "tribe" (TRIBE's transforms on brainrl's words)
    cache_max_gb: float = 20.0  # TRIBE's feature cache + audio copies; emptied when larger (0: every call)
    predict_path: str = "tribe"  # "tribe" (TribeModel.predict) | "direct" (the same tensors without its DataFrame)

    def __post_init__(self) -> None:
        if self.speech_path not in SPEECH_PATHS:
            raise ValueError(f"speech_path must be one of {SPEECH_PATHS}; got {self.speech_path!r}.")
        if self.text_features is None:
            self.text_features = "one-pass" if self.speech_path == "fast" else "reference"
        if self.text_features not in TEXT_FEATURE_MODES:
            raise ValueError(f"text_features must be one of {TEXT_FEATURE_MODES}; got {self.text_features!r}.")
        if self.audio_features not in AUDIO_FEATURE_MODES:
            raise ValueError(f"audio_features must be one of {AUDIO_FEATURE_MODES}; got {self.audio_features!r}.")
        if self.contexts not in CONTEXT_MODES:
            raise ValueError(f"contexts must be one of {CONTEXT_MODES}; got {self.contexts!r}.")
        if self.audio_batch_size < 1:
            raise ValueError(f"audio_batch_size must be >= 1; got {self.audio_batch_size}.")
        if self.predict_path not in PREDICT_PATHS:
            raise ValueError(f"predict_path must be one of {PREDICT_PATHS}; got {self.predict_path!r}.")
        if self.predict_path == "direct" and (self.speech_path != "fast" or self.contexts != "brainrl"):
            raise ValueError(
                "predict_path='direct' builds TRIBE's inputs from brainrl's own words and contexts; TRIBE's event "
                f"transforms (speech_path={self.speech_path!r}, contexts={self.contexts!r}) need its DataFrame. Use "
                "predict_path='tribe', or speech_path='fast' with contexts='brainrl'."
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}; got {self.dtype!r}.")
        parts = self.float32_parts.split(",") if isinstance(self.float32_parts, str) else self.float32_parts
        parts = [p.strip() for p in parts if p.strip()]
        self.float32_parts = tuple(sorted(set(parts)))
        unknown = sorted(set(self.float32_parts) - set(PRECISION_PARTS))
        if unknown:
            raise ValueError(f"float32_parts takes parts of {PRECISION_PARTS}; got {unknown}.")
        if self.float32_parts and self.dtype != "bfloat16":
            raise ValueError(f"float32_parts={list(self.float32_parts)} only applies to dtype='bfloat16' (float32 "
                             "runs every part in float32); drop it or set dtype='bfloat16'.")
        if self.matmul_precision not in MATMUL_PRECISIONS:
            raise ValueError(f"matmul_precision must be one of {MATMUL_PRECISIONS}; got {self.matmul_precision!r}.")
        if self.dtype == "bfloat16" and not self.allow_bf16:
            raise ValueError(
                "dtype='bfloat16' changes TRIBE's numbers; float32 is the reference. Run a parity check "
                "against float32 first, then pass allow_bf16=True to accept it."
            )
        if not isinstance(self.device, str) or not DEVICE_PATTERN.match(self.device):
            raise ValueError(
                f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto'; got {self.device!r}. "
                "(TRIBE's extractors take no other device names.)"
            )
        if not self.cache_max_gb >= 0:
            raise ValueError(f"cache_max_gb must be >= 0 (0 empties TRIBE's cache after every call); got {self.cache_max_gb!r}.")
        if self.max_context_words < 1 or self.max_stimuli_per_call < 1 or self.window_batch_size < 1 or self.text_batch_size < 1:
            raise ValueError("max_context_words, max_stimuli_per_call, window_batch_size and text_batch_size must be >= 1.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TribeConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown TribeConfig keys {unknown}; valid keys: {sorted(known)}.")
        return cls(**data)

    def part_dtype(self, part: str) -> str:
        """The dtype ``part`` (of ``PRECISION_PARTS``) runs in."""
        if part not in PRECISION_PARTS:
            raise ValueError(f"unknown part {part!r}; parts are {PRECISION_PARTS}")
        return "float32" if part in self.float32_parts else self.dtype

    @property
    def precision_label(self) -> str:
        """``dtype``, plus the parts kept in float32 (cache folder names, logs)."""
        label = self.dtype + "".join(f"-{part}32" for part in self.float32_parts)
        return label + ("-tf32" if self.matmul_precision == "high" else "")

    @property
    def cuda_index(self) -> int | None:
        """N for ``device="cuda:N"``, else None."""
        return int(self.device.split(":")[1]) if self.device.startswith("cuda:") else None

    @property
    def extractor_device(self) -> str:
        """The device name TRIBE's extractors accept: "cuda:N" becomes "cuda" (run inside torch.cuda.device(N))."""
        return "cuda" if self.device.startswith("cuda") else self.device

    def tribe_config_update(self) -> dict[str, Any]:
        """Overrides passed to ``TribeModel.from_pretrained(config_update=...)``: no DataLoader worker
        processes, extractors on the chosen device (the checkpoint bakes in "cuda")."""
        update: dict[str, Any] = {
            "data.num_workers": 0,
            "data.batch_size": self.window_batch_size,
            "data.text_feature.device": self.extractor_device,
            "data.audio_feature.device": self.extractor_device,
            "data.video_feature.image.device": self.extractor_device,
        }
        update.update(self.config_update)
        return update

    def result_settings(self) -> dict[str, Any]:
        """The settings that change a prediction (for identity() and cache keys)."""
        return {
            "repo_id": self.repo_id,
            "revision": self.revision if self.checkpoint_dir is None else f"local:{self.checkpoint_dir}",
            "checkpoint_name": self.checkpoint_name,
            "speech_path": self.speech_path,
            "contexts": "brainrl-direct" if self.speech_path == "fast" and self.contexts == "brainrl" else "tribev2-transforms",
            "dtype": self.dtype,
            **({"float32_parts": list(self.float32_parts)} if self.float32_parts else {}),
            **({"matmul_precision": self.matmul_precision} if self.matmul_precision != "highest" else {}),
            "text_features": (
                "one-pass (brainrl: one causal pass per text, word-span means, in TRIBE's HuggingFaceText)"
                if self.text_features == "one-pass"
                else "per-word-context (TRIBE's HuggingFaceText)"
            ),
            "audio_features": (
                "batched (brainrl: torch filter bank + masked w2v-bert batches, in TRIBE's Wav2VecBert)"
                if self.audio_features == "batched" else "per-clip (TRIBE's Wav2VecBert)"
            ),
            "max_context_words": self.max_context_words,
            **({"predict_path": self.predict_path} if self.predict_path != "tribe" else {}),
            "config_update": {k: v for k, v in sorted(self.config_update.items())},
        }

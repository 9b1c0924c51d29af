"""Test doubles of ``gtts`` and ``whisperx`` (network services and hub weights cannot run here).

They mirror the real APIs (names, arguments, returned shapes, checked against gTTS 2.5 and whisperX
3.7-3.8) and produce real data: the gTTS double speaks the text with espeak-ng and saves an MP3; the
whisperx double decodes it to 16 kHz float32 like ``whisperx.load_audio``; its "ASR" writes numbers as
digits and expands "Dr." to "Doctor" as Whisper does; its aligner times only words with characters in
the English wav2vec2 dictionary (a-z and '), so numerals come back without "start", like the real one.
"""

from __future__ import annotations

import hashlib
import sys
import types
from math import gcd

import numpy as np
import pytest

_ALIGNABLE = set("abcdefghijklmnopqrstuvwxyz'")
_SPOKEN: dict[str, str] = {}  # path of an MP3 made by the gTTS double -> text it speaks
_HEARD: dict[str, str] = {}  # fingerprint of audio returned by load_audio -> that text


def _fingerprint(audio) -> str:
    return hashlib.sha1(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()


def make_gtts_module(calls: dict) -> types.ModuleType:
    from brainrl.stimulus.espeak import EspeakEngine

    module = types.ModuleType("gtts")
    module.__version__ = "2.5.4"

    class gTTSError(Exception):
        pass

    class gTTS:
        def __init__(self, text, tld="com", lang="en", slow=False, lang_check=True, pre_processor_funcs=None,
                     tokenizer_func=None, timeout=None):  # fmt: skip
            if not text:
                raise AssertionError("No text to speak")
            self.text, self.tld, self.lang = text, tld, lang

        def save(self, savefile):
            import soundfile

            calls["gtts"] = calls.get("gtts", 0) + 1
            if calls.get("offline"):
                raise gTTSError("Failed to connect. Probable cause: Unknown")
            speech = EspeakEngine(keep_waveform=True, rate=150).synthesize_one(self.text)
            soundfile.write(str(savefile), speech.waveform, speech.sample_rate, format="MP3")
            _SPOKEN[str(savefile)] = self.text
            calls.setdefault("mp3_bytes", []).append(open(savefile, "rb").read())  # what gTTS saved

    module.gTTS, module.gTTSError = gTTS, gTTSError
    return module


def make_whisperx_module(calls: dict) -> types.ModuleType:
    module = types.ModuleType("whisperx")
    module.__version__ = "3.7.2"
    module.SAMPLE_RATE = 16000

    def load_audio(file, sr=16000):
        import soundfile
        from scipy.signal import resample_poly

        data, rate = soundfile.read(str(file), dtype="float32", always_2d=True)
        mono = data.mean(axis=1)
        g = gcd(sr, rate)
        audio = resample_poly(mono, sr // g, rate // g).astype(np.float32)
        _HEARD[_fingerprint(audio)] = _SPOKEN[str(file)]  # lets the "ASR" below know what it hears
        return audio

    class FasterWhisperPipeline:
        def __init__(self, arch, device, compute_type, language):
            self.arch, self.device, self.compute_type, self.preset_language = arch, device, compute_type, language

        def transcribe(self, audio, batch_size=None, num_workers=0, language=None, task=None, chunk_size=30,
                       print_progress=False, combined_progress=False, verbose=False):  # fmt: skip
            calls["transcribe"] = calls.get("transcribe", 0) + 1
            text = _HEARD[_fingerprint(audio)]
            heard = " ".join("Doctor" if t == "Dr." else t for t in text.split())
            duration = len(audio) / 16000
            if calls.get("silent"):
                return {"segments": [], "language": language or self.preset_language}
            return {
                "segments": [
                    {"text": " " + heard, "start": 0.031, "end": round(duration - 0.05, 3), "avg_logprob": -0.2}
                ],
                "language": language or self.preset_language or "en",
            }

    def load_model(whisper_arch, device, device_index=0, compute_type="float16", asr_options=None, language=None,
                   vad_model=None, vad_method="pyannote", vad_options=None, model=None, task="transcribe",
                   download_root=None, local_files_only=False, threads=4):  # fmt: skip
        calls["load_model"] = calls.get("load_model", 0) + 1
        if device == "cpu" and compute_type == "float16":
            raise ValueError(
                "Requested float16 compute type, but the target device or backend do not support efficient "
                "float16 computation."
            )
        return FasterWhisperPipeline(whisper_arch, device, compute_type, language)

    torchaudio_bundles = {"WAV2VEC2_ASR_BASE_960H", "WAV2VEC2_ASR_LARGE_960H", "WAV2VEC2_ASR_LARGE_LV60K_960H",
                          "VOXPOPULI_ASR_BASE_10K_FR", "VOXPOPULI_ASR_BASE_10K_DE"}  # a few torchaudio pipelines
    defaults = {"en": "WAV2VEC2_ASR_BASE_960H", "fr": "VOXPOPULI_ASR_BASE_10K_FR", "de": "VOXPOPULI_ASR_BASE_10K_DE"}

    def load_align_model(language_code, device, model_name=None, model_dir=None):
        """Like whisperX: no name takes the language's default; a torchaudio pipeline name loads that bundle,
        any other name is fetched from the Hugging Face hub (refused here: no hub)."""
        calls["load_align_model"] = calls.get("load_align_model", 0) + 1
        if model_name is None:
            if language_code not in defaults:
                raise ValueError(f"No default align-model for language: {language_code}")
            model_name = defaults[language_code]
        calls.setdefault("align_model_names", []).append(model_name)
        if model_name not in torchaudio_bundles:
            raise ValueError(f'The chosen align_model "{model_name}" could not be found in huggingface '
                             "(https://huggingface.co/models) or torchaudio (https://pytorch.org/audio/stable/pipelines.html#id14)")
        dictionary = {c: i for i, c in enumerate("|etaonihsrdlumwcfgypbvk'xjqz")}
        metadata = {"language": language_code, "dictionary": dictionary, "type": "torchaudio"}
        return object(), metadata

    def align(transcript, model, align_model_metadata, audio, device, interpolate_method="nearest",
              return_char_alignments=False, print_progress=False, combined_progress=False):  # fmt: skip
        """Words spread over each segment by length; words without dictionary characters get no times."""
        calls["align"] = calls.get("align", 0) + 1
        segments, word_segments = [], []
        for segment in transcript:
            tokens = segment["text"].split()
            weights = np.array([len(t) + 1 for t in tokens], dtype=float)
            fractions = np.concatenate([[0], np.cumsum(weights) / weights.sum()])
            edges = segment["start"] + (segment["end"] - segment["start"]) * fractions
            words = []
            for k, token in enumerate(tokens):
                word = {"word": token}
                if any(c in _ALIGNABLE for c in token.lower()):
                    word.update(start=round(float(edges[k]), 3), end=round(float(edges[k + 1]) - 0.02, 3), score=0.9)
                words.append(word)
            segments.append({"start": segment["start"], "end": segment["end"], "text": segment["text"], "words": words})
            word_segments += words
        return {"segments": segments, "word_segments": word_segments}

    module.load_audio, module.load_model = load_audio, load_model
    module.load_align_model, module.align = load_align_model, align
    return module


@pytest.fixture
def online_doubles(monkeypatch):
    """Install the doubles as ``gtts`` and ``whisperx``; returns the call counters."""
    from brainrl.stimulus.online import GTTSWhisperXEngine

    calls: dict = {}
    monkeypatch.setitem(sys.modules, "gtts", make_gtts_module(calls))
    monkeypatch.setitem(sys.modules, "whisperx", make_whisperx_module(calls))
    GTTSWhisperXEngine.clear_model_cache()
    yield calls
    GTTSWhisperXEngine.clear_model_cache()

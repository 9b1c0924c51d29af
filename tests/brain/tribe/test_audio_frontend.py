"""The batched torch audio front end against transformers' SeamlessM4TFeatureExtractor and scipy's
resample_poly, on real espeak speech (CPU; the benchmark runs the same code on the GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainrl.brain.tribe.audio_frontend import PolyphaseResampler, SeamlessFbank

scipy_signal = pytest.importorskip("scipy.signal")
transformers = pytest.importorskip("transformers")

TEXTS = [  # different lengths, so the batch is padded and frame counts differ (odd and even)
    "The river was quiet in the morning, and the light came slowly over the old house.",
    "She opened the letter again.",
    "Every winter the captain walked to the garden, listened to the music and remembered his brother.",
]


@pytest.fixture(scope="module")
def espeak_clips(tmp_path_factory):
    from brainrl.stimulus import get_speech_engine

    engine = get_speech_engine("espeak", out_dir=tmp_path_factory.mktemp("speech"))
    stims = engine.synthesize(TEXTS)
    rate = stims[0].sample_rate
    assert all(s.sample_rate == rate for s in stims)
    return [s.load_waveform() for s in stims], rate


@pytest.fixture(scope="module")
def clips_16k(espeak_clips):
    """16 kHz float32 clips, filtered in float64 (scipy filters float32 input in float32, which moves the
    fbank by about 1e-4; the benchmark's CPU path filters in float64 too)."""
    waves, rate = espeak_clips
    return [scipy_signal.resample_poly(w.astype(np.float64), 16000, rate).astype(np.float32) for w in waves]


@pytest.fixture(scope="module")
def reference(clips_16k):
    extractor = transformers.SeamlessM4TFeatureExtractor()
    return extractor(clips_16k, sampling_rate=16000, padding=True, return_tensors="pt", return_attention_mask=True)


def test_fbank_equals_seamless_extractor_on_espeak_speech(clips_16k, reference):
    frames = SeamlessFbank().frame_counts([len(c) for c in clips_16k])
    assert len({f % 2 for f in frames}) == 2, f"want odd and even frame counts, got {frames}"
    ours = SeamlessFbank()(clips_16k)
    assert ours["input_features"].shape == reference["input_features"].shape
    assert ours["input_features"].dtype == torch.float32
    assert torch.equal(ours["attention_mask"], reference["attention_mask"])
    diff = (ours["input_features"] - reference["input_features"]).abs().max().item()
    assert diff < 1e-5, diff  # float32 rounding; measured 1.4e-6 on these clips
    assert reference["input_features"].abs().max().item() > 1.0  # the features are not trivially small


def test_each_clip_is_normalised_on_its_own(clips_16k):
    fbank = SeamlessFbank()
    batch = fbank(clips_16k)
    for row, clip in enumerate(clips_16k):
        alone = fbank([clip])
        n = int(alone["attention_mask"].sum())
        assert int(batch["attention_mask"][row].sum()) == n
        assert torch.allclose(batch["input_features"][row, :n], alone["input_features"][0, :n], atol=1e-6)
        assert batch["input_features"][row, alone["input_features"].shape[1] :].abs().sum() == 0  # padding is 0


def test_float32_compute_is_close_and_its_effect_on_w2v_bert_is_small(clips_16k, reference):
    fast = SeamlessFbank(compute_dtype=torch.float32)(clips_16k)
    diff = (fast["input_features"] - reference["input_features"]).abs().max().item()
    assert 0 < diff < 5e-3, diff  # measured 8e-4: float32 FFT and log-mel of 16-bit-scaled samples

    config = transformers.Wav2Vec2BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=128, output_hidden_size=64)
    torch.manual_seed(0)
    model = transformers.Wav2Vec2BertModel(config).eval()
    with torch.inference_mode():
        ref = model(**{k: reference[k] for k in ("input_features", "attention_mask")}).last_hidden_state
        exact = model(**SeamlessFbank()(clips_16k)).last_hidden_state
        approx = model(**fast).last_hidden_state
    mask = reference["attention_mask"].bool()
    assert (exact - ref)[mask].abs().max().item() < 1e-4
    r = np.corrcoef(approx[mask].ravel().numpy(), ref[mask].ravel().numpy())[0, 1]
    assert r > 0.9999 and (approx - ref)[mask].abs().max().item() < 1e-2


@pytest.mark.parametrize(("rate_in", "rate_out"), [(22050, 16000), (44100, 16000), (8000, 16000), (16000, 16000)])
def test_resampler_equals_scipy_resample_poly(rate_in, rate_out):
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.3 for n in (rate_in // 2 + 37, rate_in // 5, 1001)]
    padded = torch.zeros(len(waves), max(map(len, waves)), dtype=torch.float64)
    for row, wave in enumerate(waves):
        padded[row, : len(wave)] = torch.from_numpy(wave)
    out, lengths = PolyphaseResampler(rate_in, rate_out)(padded, [len(w) for w in waves])
    for row, wave in enumerate(waves):
        expected = scipy_signal.resample_poly(wave.astype(np.float64), rate_out, rate_in)
        assert lengths[row] == len(expected)
        np.testing.assert_allclose(out[row, : lengths[row]].numpy(), expected, atol=1e-12, rtol=0)
        in_float32 = scipy_signal.resample_poly(wave, rate_out, rate_in)  # scipy filters float32 in float32
        np.testing.assert_allclose(out[row, : lengths[row]].numpy(), in_float32, atol=1e-6, rtol=0)
        assert out[row, lengths[row] :].abs().sum().item() == 0


def test_resampler_then_fbank_matches_cpu_path_on_espeak_speech(espeak_clips, reference):
    waves, rate = espeak_clips
    padded = torch.zeros(len(waves), max(map(len, waves)), dtype=torch.float32)
    for row, wave in enumerate(waves):
        padded[row, : len(wave)] = torch.from_numpy(wave)
    resampled, lengths = PolyphaseResampler(rate, 16000)(padded, [len(w) for w in waves])
    ours = SeamlessFbank().from_padded(resampled.float(), lengths)  # float32 at 16 kHz, as the CPU path has
    assert torch.equal(ours["attention_mask"], reference["attention_mask"])
    diff = (ours["input_features"] - reference["input_features"]).abs().max().item()
    assert diff < 1e-5, diff


def test_bad_input_is_refused_with_the_fix():
    fbank = SeamlessFbank()
    with pytest.raises(ValueError, match="resample"):
        fbank([np.zeros(16000, np.float32)], sampling_rate=22050)
    with pytest.raises(ValueError, match="at least 560"):
        fbank([np.zeros(16000, np.float32), np.zeros(500, np.float32)])
    with pytest.raises(ValueError, match="no waveforms"):
        fbank([])
    with pytest.raises(ValueError, match="compute_dtype"):
        SeamlessFbank(compute_dtype=torch.float16)

"""The host-side steps of the batched audio path (brainrl/brain/tribe/batched_audio.py) against neuralset's own
BaseAudio code, in the default tier (neuralset and julius are brainrl dependencies; no TRIBE checkout needed).
The whole path against TRIBE's per-clip features: tests/brain/tribe/test_tribe_real_stack.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

audio = pytest.importorskip("neuralset.extractors.audio")  # julius comes with the dev extra (pyproject.toml)

from brainrl.brain.tribe.batched_audio import resample_like_extractor, target_frames  # noqa: E402


class _Clip(audio.BaseAudio):
    @property
    def _input_frequency(self) -> float:
        return 16000

    def _process_wav(self, wav):
        return wav


class _OwnResampling(_Clip):
    def _resample_wav(self, wav, old_frequency, new_frequency):
        return wav[::2]


def test_cached_resampler_equals_the_extractors_own_exactly():
    extractor = _Clip(frequency=2.0)
    torch.manual_seed(0)
    for seconds in (1.3, 2.0):  # the resampler is reused across clips of other lengths
        wav = torch.randn(int(22050 * seconds), 1)
        expected = extractor._resample_wav(wav, 22050, 16000)
        assert torch.equal(resample_like_extractor(extractor, wav, 22050), expected)
    # an extractor with its own resampling keeps it; so does a non-integer rate (neuralset refuses it)
    wav = torch.randn(100, 1)
    assert torch.equal(resample_like_extractor(_OwnResampling(frequency=2.0), wav, 22050), wav[::2])
    with pytest.raises(ValueError, match="integers"):
        resample_like_extractor(extractor, wav, 22050.5)


def test_target_frames_and_nearest_resampling_commute_with_the_layer_mean():
    extractor = _Clip(frequency=2.0)
    event = type("Event", (), {"duration": 35.3})()
    assert target_frames(extractor, event) == 71  # round(35.3 s x 2 Hz), TRIBE's _get_data count
    assert target_frames(_Clip(frequency="native"), event) is None
    latents = torch.randn(25, 8, 1765)
    # the batched path resamples all layers on the device, TRIBE may average layers first: the same frames are
    # picked (exactly), and the float32 mean of 25 values may differ in summation order only (1e-6 relative)
    picked = F.interpolate(latents, 71)
    assert torch.equal(picked[:, :, 5], latents[:, :, int(5 * 1765 / 71)])
    torch.testing.assert_close(picked.mean(0), F.interpolate(latents.mean(0)[None], 71)[0], rtol=1e-6, atol=1e-6)


def test_nearest_frames_are_interpolates_own_picks():
    from brainrl.brain.tribe.batched_audio import nearest_frames

    torch.manual_seed(1)
    for n, target in ((1765, 71), (1750, 70), (37, 80), (12, 12)):
        latents = torch.randn(3, 4, n)
        frames = nearest_frames(n, target, "cpu")
        assert torch.equal(latents[..., frames], F.interpolate(latents, target))
    assert torch.equal(nearest_frames(5, None, "cpu"), torch.arange(5))


@pytest.mark.gpu
def test_resampling_on_the_gpu_equals_the_cpu():
    """The batched path resamples on the model's device, with TF32 off: float32 to within summation order."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    extractor = _Clip(frequency=2.0)
    wav = torch.randn(22050 * 35, 1)
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default: the resampling must switch it off itself
    on_gpu = resample_like_extractor(extractor, wav.cuda(), 22050).cpu()
    torch.testing.assert_close(on_gpu, resample_like_extractor(extractor, wav, 22050), rtol=0, atol=1e-5)


def test_compact_relative_key_bias_equals_transformers_own(monkeypatch):
    """w2v-bert with the compact relative-key bias gives transformers' own hidden states (float32, summation order)."""
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

    from brainrl.brain.tribe import batched_audio
    from brainrl.brain.tribe.batched_audio import compact_relative_key_bias

    calls = []
    original = batched_audio.relative_key_bias
    monkeypatch.setattr(batched_audio, "relative_key_bias", lambda *a: calls.append(1) or original(*a))

    config = Wav2Vec2BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                output_hidden_size=32, position_embeddings_type="relative_key",
                                left_max_position_embeddings=8, right_max_position_embeddings=3)
    torch.manual_seed(0)
    model = Wav2Vec2BertModel(config).eval()
    features = torch.randn(2, 40, config.feature_projection_input_dim)
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[1, 25:] = 0  # a padded clip
    with torch.no_grad():
        expected = model(features, attention_mask=mask, output_hidden_states=True).hidden_states
        with compact_relative_key_bias():
            ours = model(features, attention_mask=mask, output_hidden_states=True).hidden_states
        again = model(features, attention_mask=mask, output_hidden_states=True).hidden_states  # restored on exit
    assert len(calls) == config.num_hidden_layers  # the compact bias ran in every layer, and only inside the context
    for a, b, c in zip(ours, expected, again):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert torch.equal(b, c)

    # the key padding folded into the bias's gather: the same bias values where keys are kept, the dtype's minimum
    # where transformers' sdpa path would have put it, so the very same hidden states
    from transformers.integrations import sdpa_attention

    assert model.config._attn_implementation == "sdpa"  # the path whose mask combination is skipped
    combined = []
    original_mask = sdpa_attention.create_position_bias_mask
    monkeypatch.setattr(sdpa_attention, "create_position_bias_mask",
                        lambda *a, **k: combined.append(1) or original_mask(*a, **k))
    counting = sdpa_attention.create_position_bias_mask
    with torch.no_grad(), compact_relative_key_bias(key_lengths=[40, 25]):
        folded = model(features, attention_mask=mask, output_hidden_states=True).hidden_states
    assert combined == []  # the bias came with the mask in it: no where(mask, bias, min) pass
    assert sdpa_attention.create_position_bias_mask is counting  # restored on exit
    assert len(calls) == 2 * config.num_hidden_layers
    for a, b in zip(folded, ours):
        assert torch.equal(a, b)

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

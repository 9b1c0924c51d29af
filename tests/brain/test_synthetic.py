"""The synthetic reference brain model: shape, determinism and its documented sensitivities.

Stimuli are built by hand (real-looking word timings and a waveform array) so that two texts can be
compared with identical timing and audio; one test also runs the real espeak engine.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from brainrl.brain import BrainMap, Failed, get_brain_model
from brainrl.brain.synthetic import SYNTHETIC_MODEL_VERSION, SYNTHETIC_NOTE, SyntheticBrainModel
from brainrl.cortex import load_destrieux
from brainrl.stimulus import Stimulus, Word
from brainrl.brain.base import MAP_ATOL, MAP_RTOL

SIMPLE = ("The dog ran. The cat sat down. The sun was hot. We ate our lunch. The bus came late. "
          "Kids played in the park. It rained at noon.")
COMPLEX = ("The report that the committee, which the mayor had appointed because the budget was late, "
           "wrote was accepted, although critics who read it said that it ignored them.")


def hand_stimulus(text: str, seconds_per_word: float = 0.4, amplitude: float = 0.1, sample_rate: int = 16000,
                  tail: float = 0.3, engine_version: str = "1") -> Stimulus:
    """Words every ``seconds_per_word`` from 0.2 s, and white noise of RMS ``amplitude`` as the audio."""
    words, t = [], 0.2
    for match in re.finditer(r"\S+", text):
        core = match.group().rstrip(".,;:!?")
        words.append(Word(core, t, 0.9 * seconds_per_word, match.start(), match.start() + len(core)))
        t += seconds_per_word
    duration = t + tail
    rng = np.random.default_rng(0)
    waveform = (amplitude * rng.standard_normal(int(round(duration * sample_rate)))).astype(np.float32)
    return Stimulus(text=text, words=words, audio_path=None, sample_rate=sample_rate, duration=duration,
                    engine="hand-built", engine_version=engine_version, waveform=waveform)


@pytest.fixture(scope="module")
def model() -> SyntheticBrainModel:
    return SyntheticBrainModel(seed=0)


@pytest.fixture(scope="module")
def regions() -> dict[str, np.ndarray]:
    atlas = load_destrieux()
    return {
        "broca": atlas.mask(["G_front_inf-Opercular", "G_front_inf-Triangul"], "left"),
        "auditory": atlas.mask(["G_temp_sup-G_T_transv", "S_temporal_transverse", "G_temp_sup-Plan_tempo"], "both"),
        "cortex": atlas.hemisphere_mask("both"),
    }


def roi_minus_global(brain_map: BrainMap, roi: np.ndarray, cortex: np.ndarray) -> float:
    mean = brain_map.mean_map()
    return float(mean[roi].mean() - mean[cortex].mean())


def test_registered_and_shape(model):
    assert isinstance(get_brain_model("synthetic"), SyntheticBrainModel)
    for seconds_per_word, tail in ((0.4, 0.3), (0.5, 0.3)):
        stim = hand_stimulus(SIMPLE, seconds_per_word=seconds_per_word, tail=tail)
        (pred,) = model.predict([stim])
        assert isinstance(pred, BrainMap)
        assert pred.data.shape == (math.ceil(stim.duration), 20484)
        assert pred.data.dtype == np.float32
        assert np.isfinite(pred.data).all() and pred.data.std() > 0


def test_exact_duration_gives_that_many_frames(model):
    stim = hand_stimulus("one two three four", seconds_per_word=0.5, tail=0.8)  # 0.2 + 2.0 + 0.8 = 3.0 s
    assert stim.duration == pytest.approx(3.0)
    assert model.predict([stim])[0].n_frames == 3


def test_bit_identical_for_same_input_whatever_the_batch(model):
    a, b = hand_stimulus(SIMPLE), hand_stimulus(COMPLEX)
    alone = model.predict([a])[0].data
    in_batch = model.predict([b, a, b])[1].data
    fresh = SyntheticBrainModel(seed=0).predict([a])[0].data
    assert alone.tobytes() == in_batch.tobytes() == fresh.tobytes()


def test_pickled_model_predicts_the_same(model):
    import pickle

    stim = hand_stimulus(SIMPLE)
    clone = pickle.loads(pickle.dumps(model))
    assert len(pickle.dumps(model)) < 10_000
    assert clone.predict([stim])[0].data.tobytes() == model.predict([stim])[0].data.tobytes()


def test_seed_text_and_engine_change_the_map(model):
    a = hand_stimulus(SIMPLE)
    base = model.predict([a])[0].data
    other_seed = SyntheticBrainModel(seed=1).predict([a])[0].data
    other_text = model.predict([hand_stimulus(SIMPLE.replace("dog", "fox"))])[0].data
    assert not np.array_equal(base, other_seed)
    assert not np.array_equal(base, other_text)
    # seeds change the smooth random parts, not the documented structure
    assert np.corrcoef(base.mean(0), other_seed.mean(0))[0, 1] > 0.5


def test_identity_and_provenance(model):
    ident = model.identity()
    assert ident["model"] == "synthetic" and ident["version"] == SYNTHETIC_MODEL_VERSION
    assert ident["seed"] == 0 and ident["text_features"] == "minilm-static" and ident["noise_std"] == 0.0
    stim = hand_stimulus(SIMPLE)
    prov = model.predict([stim])[0].provenance
    assert prov["synthetic"] is True and prov["note"] == SYNTHETIC_NOTE
    assert prov["model"] == "synthetic" and prov["model_version"] == SYNTHETIC_MODEL_VERSION and prov["seed"] == 0
    assert prov["speech_engine"] == "hand-built" and prov["speech_engine_version"] == "1"
    assert prov["stimulus_key"] == stim.key() and prov["brainrl_version"]
    assert SyntheticBrainModel(seed=3, noise_std=0.1).identity() != ident


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_syntactic_complexity_raises_left_broca_more_than_global(seed, regions):
    simple, complex_ = hand_stimulus(SIMPLE), hand_stimulus(COMPLEX)
    assert len(simple.words) == len(complex_.words) and simple.duration == complex_.duration
    maps = SyntheticBrainModel(seed=seed).predict([simple, complex_])
    gain = [roi_minus_global(m, regions["broca"], regions["cortex"]) for m in maps]
    assert gain[1] - gain[0] > 0.2, gain
    # and the gain is selective: Broca rises more than the whole-cortex mean does
    broca_rise = maps[1].mean_map()[regions["broca"]].mean() - maps[0].mean_map()[regions["broca"]].mean()
    global_rise = maps[1].mean_map()[regions["cortex"]].mean() - maps[0].mean_map()[regions["cortex"]].mean()
    assert broca_rise > 3 * abs(global_rise)


def test_louder_speech_raises_auditory_cortex(model, regions):
    quiet, loud = hand_stimulus(SIMPLE, amplitude=0.05), hand_stimulus(SIMPLE, amplitude=0.2)
    maps = model.predict([quiet, loud])
    auditory = [roi_minus_global(m, regions["auditory"], regions["cortex"]) for m in maps]
    broca = [roi_minus_global(m, regions["broca"], regions["cortex"]) for m in maps]
    assert auditory[1] - auditory[0] > 0.5
    assert auditory[1] - auditory[0] > 5 * abs(broca[1] - broca[0])


def test_speech_presence_shifts_the_global_mean(model, regions):
    speech = hand_stimulus(SIMPLE, amplitude=0.0)
    silence = Stimulus(text=SIMPLE, words=[], audio_path=None, sample_rate=16000, duration=speech.duration,
                       engine="hand-built", engine_version="1", waveform=np.zeros(16000, np.float32))
    with_speech, without = model.predict([speech, silence])
    assert np.all(without.data == 0.0)  # no events, no audio energy -> no response
    assert with_speech.mean_map()[regions["cortex"]].mean() > 0.2


def test_noise_is_deterministic_per_stimulus():
    noisy = SyntheticBrainModel(seed=0, noise_std=0.5)
    a, b = hand_stimulus(SIMPLE), hand_stimulus(SIMPLE, engine_version="2")
    first, again, other = noisy.predict([a, a, b])
    clean = SyntheticBrainModel(seed=0).predict([a])[0]
    assert np.array_equal(first.data, again.data)
    residual = first.data - clean.data
    assert 0.4 < residual.std() < 0.6
    assert not np.allclose(residual, other.data - clean.data)  # engine version is part of the noise seed


def test_unusable_stimuli_fail_with_a_reason(model):
    zero = Stimulus(text="hi", words=[], audio_path=None, sample_rate=16000, duration=0.0, engine="x",
                    engine_version="1", waveform=np.zeros(10, np.float32))
    no_audio = Stimulus(text="hi", words=[Word("hi", 0.0, 0.3)], audio_path=None, sample_rate=16000,
                        duration=1.0, engine="x", engine_version="1")
    good = hand_stimulus(SIMPLE)
    out = model.predict([zero, good, no_audio])
    assert isinstance(out[0], Failed) and "duration" in out[0].reason
    assert isinstance(out[1], BrainMap)
    assert isinstance(out[2], Failed) and "audio" in out[2].reason
    with pytest.raises(TypeError, match="sequence of stimuli"):
        model.predict(good)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="text_features"):
        SyntheticBrainModel(text_features="bert")
    with pytest.raises(ValueError, match="noise_std"):
        SyntheticBrainModel(noise_std=-1.0)


def test_lexical_variant_ignores_word_meaning(regions):
    lexical = SyntheticBrainModel(seed=0, text_features="lexical")
    # same letters and WordPiece counts, different meaning -> identical maps without semantics
    a, b = hand_stimulus("The happy child smiled."), hand_stimulus("The angry child smiled.")
    ma, mb = lexical.predict([a, b])
    np.testing.assert_allclose(ma.data, mb.data, rtol=MAP_RTOL, atol=MAP_ATOL)
    sa, sb = SyntheticBrainModel(seed=0).predict([a, b])
    assert not np.array_equal(sa.data, sb.data)


def test_real_espeak_stimulus(model):
    pytest.importorskip("espeakng_loader")
    from brainrl.stimulus import get_speech_engine

    stim = get_speech_engine("espeak").synthesize_one(COMPLEX)
    (pred,) = model.predict([stim])
    assert pred.data.shape == (math.ceil(stim.duration), 20484)
    assert pred.provenance["speech_engine_version"] == stim.engine_version
    assert model.predict([stim])[0].data.tobytes() == pred.data.tobytes()


@pytest.mark.slow
def test_contextual_minilm_variant(regions):
    contextual = SyntheticBrainModel(seed=0, text_features="minilm")
    a, b = hand_stimulus(SIMPLE), hand_stimulus(COMPLEX)
    first = contextual.predict([a, b])
    again = contextual.predict([b, a])
    assert first[0].data.tobytes() == again[1].data.tobytes()
    assert roi_minus_global(first[1], regions["broca"], regions["cortex"]) > roi_minus_global(
        first[0], regions["broca"], regions["cortex"])


def test_lexical_load_saturates_so_a_url_cannot_outscore_syntax():
    """A single huge 'word' (spelled out for seconds) must not beat a clause-rich sentence on Broca."""
    from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
    from brainrl.rewards import ROIReward

    reward = ROIReward("broca", "minus_global").use_pipeline(BrainPipeline(PipelineConfig(cache_dir="")))
    url, sentence = reward(None, [
        "def:https://en.wikipedia.org/wiki/Special:Search?search=something_very_long_and_odd&go=Go",
        "The committee, which had met in secret since the spring, announced that although the budget was "
        "approved, the bridge would wait.",
    ])
    assert url < sentence


def test_duration_comes_from_the_audio_not_the_stimulus_field(model):
    """On main a stimulus claiming 3,000 s got a 3,000-frame map (and a 144 MB matrix in a cache)."""
    from dataclasses import replace

    honest = hand_stimulus(SIMPLE)
    lying = replace(honest, duration=3000.0)
    honest_map, lying_map = model.predict([honest, lying])
    assert lying_map.n_frames == honest_map.n_frames == math.ceil(len(honest.waveform) / honest.sample_rate)
    np.testing.assert_array_equal(lying_map.data, honest_map.data)

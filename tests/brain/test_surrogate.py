"""The distilled surrogate: text-only stimuli, student features, distillation against the real offline
teacher (espeak + synthetic model), the registered brain model, persistence and refits."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from brainrl.brain import BRAIN_MODELS
from brainrl.brain.base import BrainMap, Failed
from brainrl.brain.distill import rank_agreement, refit_student, roi_table, teacher_maps
from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
from brainrl.brain.student_features import (
    FeatureConfig,
    SpeakingRate,
    feature_names,
    features_matrix,
    fit_speaking_rate,
    token_stats,
)
from brainrl.brain.surrogate import Student, SurrogateBrainModel, teacher_config
from brainrl.rewards import ROIReward
from brainrl.stimulus import get_speech_engine

from tests.brain.surrogate_helpers import distilled, teacher_config as offline_teacher, varied_texts


def surrogate_config(folder) -> PipelineConfig:
    return PipelineConfig(speech="text-only", model="surrogate", model_kwargs={"path": str(folder)}, cache_dir="")


# -- text-only speech -------------------------------------------------------------------------------
def test_text_only_engine_has_no_audio_and_no_timings():
    engine = get_speech_engine("text-only")
    stim = engine.synthesize_one("Hello,   world! A longer sentence follows here.")
    assert stim.text == "Hello, world! A longer sentence follows here."  # cleaned like every engine's input
    assert stim.words == [] and stim.duration > 0
    assert stim.audio_path is None and stim.waveform is None and stim.engine == "text-only"
    assert engine.out_dir is None  # nothing written, no temporary folder
    with pytest.raises(ValueError, match="Nothing to speak"):
        engine.synthesize_one("   ")


def test_audio_models_fail_cleanly_on_text_only_stimuli():
    pipeline = BrainPipeline(PipelineConfig(speech="text-only", model="synthetic", cache_dir=""))
    (result,) = pipeline(["The cat sat on the mat."])
    assert isinstance(result, Failed) and "audio" in result.reason


# -- features ---------------------------------------------------------------------------------------
def test_features_are_batch_invariant_and_empty_text_is_zero():
    config = FeatureConfig()
    texts = ["The cat sat on the mat.", "", "Although it rained, which nobody expected, the match went on",
             "Hello"]
    batch = features_matrix(texts, config)
    assert batch.shape == (4, len(feature_names(config)))
    for i, text in enumerate(texts):
        np.testing.assert_allclose(batch[i], features_matrix([text], config)[0], rtol=0, atol=1e-12)
    assert not batch[1].any() and batch[0].any()


def test_syntactic_load_raises_the_weighted_syntax_feature():
    config = FeatureConfig()
    plain, embedded = features_matrix(["The dog ran to the park and back.",
                                        "The dog, which the boy who lived there loved, ran."], config)
    col = feature_names(config).index("hrf_syntax")
    assert embedded[col] > plain[col] * 1.5


def test_speaking_rate_is_recovered_from_whole_text_durations():
    truth = SpeakingRate(base=0.09, per_letter=0.06, per_piece=0.03, comma=0.2, stop=0.4, per_digit=0.25)
    texts = varied_texts(60, seed=5)
    texts = [f"{t} In {1900 + 7 * i} about {i * 13} of them." if i % 3 == 0 else t for i, t in enumerate(texts)]
    seconds = []
    for text in texts:
        s = token_stats(text)
        assert s.digits.sum() == sum(ch.isdigit() for ch in text)
        seconds.append(float(truth.seconds(s.letters, s.pieces, s.comma, s.stop, s.digits).sum()))
    fitted, fit = fit_speaking_rate(texts, seconds)
    assert fit["fitted"] and fit["r"] > 0.999
    for name in ("base", "per_letter", "per_piece", "comma", "stop", "per_digit"):
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name), abs=1e-6), name


# -- distillation against the real offline teacher --------------------------------------------------
def test_distilled_student_tracks_the_teacher_on_heldout_texts():
    folder, card = distilled()
    report = card["heldout_fidelity"]
    assert report["n"] == 60
    broca = report["rois"]["broca"]
    # measured 0.99 on this data; a student that ignores the text or scrambles features lands near 0
    assert broca["selectivity"]["r"] > 0.9, broca
    assert broca["mean"]["r"] > 0.9
    assert report["rois"]["auditory"]["mean"]["r"] > 0.8
    assert card["fit"]["speaking_rate_fit"]["fitted"] and card["fit"]["speaking_rate_fit"]["r"] > 0.95
    assert card["teacher"]["identity"]["model"] == "synthetic"
    assert card["versions"]["numpy"] and card["seeds"]["seed"] == 0 and card["student_sha256"]
    assert card["data"]["train"]["n"] == 160


def test_surrogate_brain_model_through_the_pipeline_and_rewards():
    folder, _ = distilled()
    assert "surrogate" in BRAIN_MODELS.names()
    texts = varied_texts(230, seed=0)[220:]  # unseen by the student
    pipeline = BrainPipeline(surrogate_config(folder))
    maps = pipeline(texts + [""])
    assert isinstance(maps[-1], Failed) and "empty" in maps[-1].reason
    assert all(isinstance(m, BrainMap) and m.data.shape == (1, 20484) for m in maps[:-1])
    assert maps[0].provenance["time_averaged"] and maps[0].provenance["model"] == "surrogate"
    student = Student.load(folder)
    np.testing.assert_allclose(np.stack([m.data[0] for m in maps[:-1]]), student.predict_maps(texts),
                               rtol=1e-5, atol=1e-6)
    reward = ROIReward("broca", "minus_global").use_pipeline(pipeline)
    teacher = ROIReward("broca", "minus_global").use_pipeline(BrainPipeline.shared(offline_teacher()))
    mine, truth = np.array(reward(None, texts)), np.array(teacher(None, texts))
    expected = roi_table(student.predict_maps(texts), ["broca"])["selectivity"][:, 0]
    np.testing.assert_allclose(mine, expected, rtol=1e-4, atol=1e-5)  # the reward reads the student's map
    assert np.corrcoef(mine, truth)[0, 1] > 0.85
    # the same student behind any speech engine: it reads the text only
    espeak_maps = BrainPipeline(PipelineConfig(speech="espeak", model="surrogate",
                                               model_kwargs={"path": str(folder)}, cache_dir=""))(texts[:3])
    np.testing.assert_allclose(np.stack([m.data[0] for m in espeak_maps]), student.predict_maps(texts[:3]),
                               rtol=1e-5, atol=1e-6)


def test_teacher_config_comes_from_the_card():
    folder, _ = distilled()
    assert teacher_config(surrogate_config(folder)) == offline_teacher()
    plain = PipelineConfig()
    assert teacher_config(plain) is plain
    with pytest.raises(ValueError, match="path"):
        teacher_config(PipelineConfig(model="surrogate"))


def test_student_files_are_checked(tmp_path):
    folder, _ = distilled()
    with pytest.raises(FileNotFoundError, match="brainrl distill"):
        SurrogateBrainModel(path=tmp_path / "nothing")
    copy = tmp_path / "student"
    shutil.copytree(folder, copy)
    card = json.loads((copy / "card.json").read_text())
    card["student_sha256"] = "0" * 64
    (copy / "card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="does not match its card"):
        Student.load(copy)


def test_refit_follows_fresh_pairs_from_a_new_distribution(tmp_path):
    folder, _ = distilled()
    student = Student.load(folder)
    pipeline = BrainPipeline.shared(offline_teacher())
    # a distribution the student never saw: long lists of rare long words
    rare = ["Extraordinarily", "incomprehensible", "photosynthesis", "counterrevolutionary", "electroencephalography",
            "uncharacteristically", "thermodynamics", "intergovernmental", "misunderstanding", "quintessential"]
    rng = np.random.default_rng(1)
    texts = [" ".join(rng.choice(rare, size=int(rng.integers(6, 14)))) + "." for _ in range(40)]
    fresh = teacher_maps(texts, pipeline)
    target = roi_table(fresh.maps[20:], ["broca"])["selectivity"][:, 0]
    before = roi_table(student.predict_maps(fresh.texts[20:]), ["broca"])["selectivity"][:, 0]
    refit = refit_student(student, fresh.texts[:20], fresh.maps[:20], weight=4.0)
    after = roi_table(refit.predict_maps(fresh.texts[20:]), ["broca"])["selectivity"][:, 0]
    assert np.abs(after - target).mean() < 0.7 * np.abs(before - target).mean()
    assert refit.train_x.shape[0] == student.train_x.shape[0] + 20
    digest = refit.save(tmp_path / "refit")
    model = SurrogateBrainModel(path=folder)
    old_identity = model.identity()
    model.replace_student(Student.load(tmp_path / "refit"))
    assert model.identity() != old_identity and model.identity()["student_sha256"] == digest


def test_rank_agreement_counts_within_group_pairs():
    teacher = [1.0, 2.0, 3.0, 10.0, 20.0, 30.0]
    groups = ["a", "a", "a", "b", "b", "b"]
    same = rank_agreement([5, 6, 7, 0, 1, 2], teacher, groups)
    assert same["concordant_pairs"] == 1.0 and same["within_group_spearman"] == pytest.approx(1.0)
    flipped = rank_agreement([7, 6, 5, 0, 1, 2], teacher, groups)
    assert flipped["concordant_pairs"] == 0.5 and flipped["pairs"] == 6


def test_syntax_from_flags_equals_the_teachers_syntactic_load():
    from brainrl.brain.features import syntactic_load
    from brainrl.brain.student_features import _WORDS, static_features, syntactic_load_flags

    texts = varied_texts(40, seed=12) + ["Which, because; although: when. Who? That! (whose) -- whereas"]
    # random streams of openers, breaks and ends: depths that saturate at 3 and at 0, sentences of one token,
    # openers that also close a clause or a sentence ("which,", "that.")
    vocabulary = ["which", "who", "that", "because", "when", "word", "word,", "word;", "word.", "Why?", "which,",
                  "that.", "although:", "and"]
    rng = np.random.default_rng(5)
    texts += [" ".join(rng.choice(vocabulary, int(rng.integers(1, 50)))) for _ in range(150)]
    config = FeatureConfig()
    col = feature_names(config).index("max_syntax")
    rows = static_features(texts, config)
    for text, row in zip(texts, rows):
        tokens = text.split()
        tails = [t[len(t.rstrip(".,;:!?\u2013\u2014\"')]")):] for t in tokens]
        expected = syntactic_load(tokens, tails)
        _, comma, stop, _, opener, _ = _WORDS.values[_WORDS.lookup(tokens)].T
        np.testing.assert_allclose(syntactic_load_flags(opener, comma, stop), expected, rtol=0, atol=1e-12)
        assert row[col] == pytest.approx(expected.max(), abs=1e-12)


def test_rewards_through_the_student_equal_the_full_maps_for_every_roi_and_statistic():
    """ROI rewards read region means straight from the student's PCA coefficients (the map is never built):
    the same values as averaging the reconstructed 20,484-vertex map, for every preset ROI and statistic."""
    from brainrl.cortex.rois import list_rois

    folder, _ = distilled()
    student = Student.load(folder)
    texts = varied_texts(12, seed=31) + ["Entirely unseen vocabulary: zyxquv plorbs."]
    pipeline = BrainPipeline(surrogate_config(folder))
    full_maps = student.predict_maps(texts)  # the full reconstruction, (13, 20,484) float32
    rewards = [ROIReward(roi, statistic, reference=("auditory", "v1") if statistic == "minus_reference" else (),
                         direction=direction).use_pipeline(pipeline)
               for roi in list_rois() for statistic in ("mean", "minus_global", "minus_reference")
               for direction in ("maximize", "minimize")]
    for reward in rewards:
        fast = np.array(reward(None, texts), dtype=np.float64)
        sign = -1.0 if reward.direction == "minimize" else 1.0
        full = sign * np.array([reward.value(m[None, :]) for m in full_maps])
        # float32 map per vertex vs float64 projections: agreement to ~1e-7 on values of order 1
        np.testing.assert_allclose(fast, full, rtol=0, atol=1e-5, err_msg=reward.__name__)
    maps = pipeline(texts)
    assert all(m._data is None for m in maps)  # none of those rewards built a map


def test_rewards_that_read_the_whole_map_still_get_it_from_the_student():
    from brainrl.rewards.base import BrainReward

    class PeakVertex(BrainReward):  # a user's reward that reads every vertex
        def score_map(self, brain_map, index, columns):
            return float(brain_map.data.max())

    folder, _ = distilled()
    texts = varied_texts(5, seed=32)
    values = PeakVertex("peak").use_pipeline(BrainPipeline(surrogate_config(folder)))(None, texts)
    expected = Student.load(folder).predict_maps(texts).max(axis=1)
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-6)


def test_fast_prediction_path_equals_the_plain_one():
    folder, _ = distilled()
    student = Student.load(folder)
    texts = varied_texts(30, seed=21) + ["", "Entirely unseen vocabulary: zyxquv plorbs."]
    fast = student.predict_coefficients(texts)
    plain = student.coefficients(features_matrix(texts, student.features))
    np.testing.assert_allclose(fast, plain, rtol=1e-9, atol=1e-9)


def test_features_beyond_the_training_range_are_clipped():
    """A garbled 80-letter token puts the word-length means far beyond every training text: the head sees
    them clipped to the training range (+ CLIP_MARGIN), on the fast path as on the plain one."""
    from brainrl.brain.surrogate import CLIP_MARGIN

    folder, _ = distilled()
    student = Student.load(folder)
    texts = ["The " + "qwertzuiop" * 8 + " sat there.", varied_texts(1, seed=3)[0]]
    x = features_matrix(texts, student.features)
    cols = student._clip_cols
    seen = student.train_x[:, cols].astype(np.float64)
    width = seen.max(0) - seen.min(0)
    low, high = seen.min(0) - CLIP_MARGIN * width, seen.max(0) + CLIP_MARGIN * width
    assert (x[0, cols] > high + 1e-9).any()
    assert ((x[1, cols] >= low) & (x[1, cols] <= high)).all()
    clipped = x.copy()
    clipped[:, cols] = np.clip(x[:, cols], low, high)
    raw = x @ student._w + student._b
    expected = clipped @ student._w + student._b
    np.testing.assert_allclose(student.coefficients(x), expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(student.predict_coefficients(texts), expected, rtol=1e-9, atol=1e-9)
    assert np.abs(expected[0] - raw[0]).max() > 1e-3  # the clip changed the garbled text's prediction
    np.testing.assert_allclose(expected[1], raw[1], rtol=1e-9, atol=1e-9)  # and left the ordinary one alone

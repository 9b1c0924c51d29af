import logging
import pickle

import pytest

from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
from brainrl.cortex import load_destrieux
from brainrl.rewards import ROIReward, WeightedSum, completion_text, load_reward_file, load_rewards
from tests.helpers import CountingSpeech, LengthBrain


@pytest.fixture
def pipeline(tmp_path):
    return BrainPipeline(PipelineConfig(cache_dir=""), speech=CountingSpeech(out_dir=tmp_path), model=LengthBrain())


def broca_mask():
    return load_destrieux().mask(["G_front_inf-Opercular", "G_front_inf-Triangul"], "left")


def test_mean_and_selectivity_match_hand_computation(pipeline):
    texts = ["one two three", "one two three four five six"]
    mean = ROIReward("broca", "mean").use_pipeline(pipeline)
    sel = ROIReward("broca", "minus_global").use_pipeline(pipeline)
    maps = pipeline(texts)
    mask, cortex = broca_mask(), load_destrieux().hemisphere_mask("both")
    expected_mean = [float(m.data[:, mask].mean()) for m in maps]
    expected_sel = [float(m.data[:, mask].mean() - m.data[:, cortex].mean()) for m in maps]
    assert mean(None, texts) == pytest.approx(expected_mean, rel=1e-5)
    assert sel(None, texts) == pytest.approx(expected_sel, rel=1e-5, abs=1e-7)


def test_minimize_negates_and_reference_contrast(pipeline):
    texts = ["a b c d"]
    up = ROIReward("broca", "mean").use_pipeline(pipeline)(None, texts)
    down = ROIReward("broca", "mean", direction="minimize").use_pipeline(pipeline)(None, texts)
    assert down == pytest.approx([-up[0]])
    contrast = ROIReward("broca", "minus_reference", reference=["auditory"]).use_pipeline(pipeline)
    assert contrast.__name__ == "broca_minus_reference"
    data = pipeline(texts)[0].data
    from brainrl.cortex.rois import get_roi

    expected = data[:, broca_mask()].mean() - data[:, get_roi("auditory").mask()].mean()
    assert contrast(None, texts)[0] == pytest.approx(float(expected), abs=1e-6)


def test_chat_format_and_plain_completions_score_the_same(pipeline):
    reward = ROIReward("broca").use_pipeline(pipeline)
    plain = reward(["p"], ["the cat sat on the mat"])
    chat = reward([[{"role": "user", "content": "p"}]],
                  [[{"role": "assistant", "content": "the cat sat on the mat"}]])
    assert plain == chat and plain[0] is not None


def test_failures_are_none_with_logged_reason(pipeline, caplog):
    reward = ROIReward("broca").use_pipeline(pipeline)
    with caplog.at_level(logging.WARNING):
        out = reward(None, ["", "   ", "ok text here", "FAILSPEECH x", 42])
    assert out[0] is None and out[1] is None and out[3] is None and out[4] is None
    assert isinstance(out[2], float)
    assert set(reward.last_failures) == {0, 1, 3, 4}
    assert "empty" in reward.last_failures[0]
    assert "string or a list of chat messages" in reward.last_failures[4]
    assert "scored None" in caplog.text


def test_non_english_long_and_control_characters(pipeline):
    reward = ROIReward("broca").use_pipeline(pipeline)
    long_text = " ".join(["word"] * 1000)
    out = reward(None, ["Le café est très bon, naïve façade.", "Привет мир", "天气很好", "bell\x07 and\x1b escape",
                        long_text])
    # an English voice cannot speak Cyrillic or Chinese (it spells them out): None, with the reason logged
    assert [type(v) for v in out] == [float, type(None), type(None), float, float]
    stim = pipeline.speech.synthesize_one(long_text)
    assert stim.truncated and len(stim.words) == 300


def test_rewards_pickle_without_models_and_keep_names(pipeline):
    reward = ROIReward("broca", "minus_global").use_pipeline(pipeline)
    reward(None, ["warm up the pipeline"])
    clone = pickle.loads(pickle.dumps(reward))
    assert clone.__name__ == "broca_minus_global" and clone._pipeline is None
    assert clone.pipeline_config == pipeline.config


def test_unknown_roi_suggests_closest():
    with pytest.raises(KeyError, match="broca"):
        ROIReward("brocca")
    with pytest.raises(ValueError, match="reference"):
        ROIReward("broca", "minus_reference")


def test_weighted_sum_and_none_propagation(pipeline):
    a = ROIReward("broca").use_pipeline(pipeline)
    b = ROIReward("auditory").use_pipeline(pipeline)
    total = WeightedSum([a, b], [1.0, -0.5])
    texts = ["x y z", ""]
    out = total(None, texts)
    assert out[0] == pytest.approx(a(None, texts)[0] - 0.5 * b(None, texts)[0])
    assert out[1] is None and "a part failed" in total.last_failures[1]


def test_reward_files_load_and_bind(tmp_path):
    funcs, weights = load_rewards([{"path": "rewards/broca.py", "weight": 2.0},
                                   {"path": "rewards/broca_vs_auditory.py"}], PipelineConfig(cache_dir=""))
    assert [f.__name__ for f in funcs] == ["broca_minus_global", "ifg_vs_auditory"] and weights == [2.0, 1.0]
    assert funcs[0].pipeline_config.cache_dir == ""
    custom = tmp_path / "mine.py"
    custom.write_text("def make_reward(scale=1.0):\n"
                      "    def length(prompts, completions, **kw):\n"
                      "        return [scale * len(c) for c in completions]\n"
                      "    return length\n")
    (fn,) = load_reward_file(custom, scale=2.0)
    assert fn(None, ["abc"]) == [6.0]
    with pytest.raises(FileNotFoundError, match="rewards/broca.py"):
        load_reward_file("rewards/nope.py")


def test_completion_text_variants():
    assert completion_text("hi") == "hi"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}]}]) == "a"
    with pytest.raises(TypeError):
        completion_text(3.5)

"""scripts/bench_train.py: the word-piece policy vocabulary, the anchor's reconstructed TRIBE reward, the
shipped-backend reward (tribe_real tier), and
CPU smoke runs of the whole benchmark (the lead runs the real shapes on a GPU)."""

import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_train  # noqa: E402


def test_word_piece_tokenizer_gives_english_words_at_qwen_rate():
    """Random ids decode to bench_tribe's words (tags dropped), ~3 words per 4 tokens as English with Qwen."""
    from bench_tribe import VOCAB

    tok = bench_train.word_piece_tokenizer(151936)
    assert len(tok) == 151936
    ids = torch.randint(3, 151936, (4, 200), generator=torch.Generator().manual_seed(0))
    texts = tok.batch_decode(ids, skip_special_tokens=True)
    words = [w for t in texts for w in t.split()]
    assert 130 * 4 < len(words) < 170 * 4
    assert "#" not in "".join(texts)
    stems = {w.rstrip(",.;") for t in texts for w in t.split()[1:]}  # a text may open with a bare suffix
    assert all(any(s.startswith(v) for v in VOCAB) for s in stems)
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert tok(chat, add_special_tokens=False)["input_ids"][0] == tok.convert_tokens_to_ids("<|im_start|>")


def test_anchor_reference_reward_scores_each_completion_on_its_own():
    """The anchor's reconstructed TRIBE path: one reference call per completion (models rebuilt each time), a
    finite left-Broca value per text, and an empty text fails alone, with a reason (never a silent 0)."""
    from bench_tribe import make_texts

    reward, info = bench_train.anchor_reference_reward("cpu", True, "float32", 1, 0)
    try:
        texts = make_texts(2, 20, 7) + [""]
        values = reward(completions=texts)
        assert values[2] is None and "empty" in reward.last_failures[2]
        assert all(isinstance(v, float) and v == v for v in values[:2]) and values[0] != values[1]
        assert reward.calls == 2  # one call per spoken completion
        assert {"model_reload", "text_features", "audio_features", "fusion"} <= set(reward.stage_seconds)
        assert "rebuilt" in info["anchor_path"] and info["anchor_params"]["llama"] > 0
    finally:
        reward.speech.close()


def test_reward_tribe_without_tribev2_names_the_variable(monkeypatch, tmp_path, capsys):
    """--reward tribe runs TRIBE v2's own code: without its checkout the run stops at once and says how to get it."""
    monkeypatch.delenv("BRAINRL_TRIBEV2_SRC", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="BRAINRL_TRIBEV2_SRC.*setup_tribe_tier"):
        bench_train.main(["--device", "cpu", "--tiny", "--reward", "tribe", "--tribe-workdir", str(tmp_path / "w")])
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
@pytest.mark.parametrize("reward,path", [pytest.param("tribe", "tribe", marks=pytest.mark.tribe_real),
                                         pytest.param("tribe", "direct", marks=pytest.mark.tribe_real),
                                         ("synthetic", "tribe")])
def test_bench_train_runs_tiny_on_cpu(tmp_path, monkeypatch, reward, path):
    """The whole benchmark on tiny shapes. With ``tribe`` (the tribe_real tier: TRIBE v2's checkout in
    $BRAINRL_TRIBEV2_SRC) brainrl's loops score through the shipped backend, the anchor through the
    reconstructed per-call path."""
    if reward == "tribe":
        from brainrl.brain.tribe import standin

        if standin.tribev2_source() is None:
            pytest.skip(f"set {standin.SRC_ENV} to a tribev2 checkout (scripts/setup_tribe_tier.sh)")
        monkeypatch.chdir(tmp_path)  # the run enters the stand-in's hub folder
    out = tmp_path / "bench.json"
    assert bench_train.main(["--device", "cpu", "--tiny", "--groups", "2", "--reward", reward,
                             "--tribe-predict-path", path,
                             "--speech-workers", "1", "--tribe-workdir", str(tmp_path / "standin"),
                             "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["reward"]["kind"] == reward
    [row] = report["results"]
    for loop in ("anchor", "brainrl", "brainrl_grpo"):
        m = row[loop]
        assert m["step_s"] == pytest.approx(m["generation_s"] + m["reward_s"] + m["update_s"], rel=0.05)
        assert m["reward_s"] > 0 and m["generation_s"] > 0 and m["update_s"] > 0
        assert m["completion_tokens_mean"] > 0 and m["generation_ms_per_token"] > 0
    assert row["speedup"] == pytest.approx(row["anchor"]["step_s"] / row["brainrl"]["step_s"])
    assert row["speedup_grpo"] == pytest.approx(row["anchor"]["step_s"] / row["brainrl_grpo"]["step_s"])
    assert report["trainers"] == ["awsft", "grpo"]
    if reward == "tribe":
        assert "model_reload" in row["anchor"]["reward_stages_s"]
        for loop in ("brainrl", "brainrl_grpo"):  # the backend's own stages, timed inside the product's reward
            stages = row[loop]["reward_stages_s"]
            if path == "direct":  # audio beside text: their wall span adds up, each thread's time in parentheses
                features = ("(text features alone)", "(audio features alone, other thread)")
                assert {"speech", "features_wall", *features, "tribe_rest"} <= set(stages)
                assert stages["features_wall"] >= 0.9 * max(stages[k] for k in features)
            else:
                features = ("text_features", "audio_features")
                assert {"speech", *features, "tribe_rest"} <= set(stages)
            assert all(stages[k] > 0 for k in features) and stages["tribe_rest"] > 0
            added = sum(v for k, v in stages.items() if not k.startswith("("))
            assert added == pytest.approx(row[loop]["reward_s"], rel=0.05)
        assert report["reward"]["brain_model"]["name"] == "tribe"
        assert "one-pass" in report["reward"]["brain_model"]["text_features"]
        extra = row["anchor_with_whisperx"]
        assert extra["step_s"] == pytest.approx(row["anchor"]["step_s"] + 2 * bench_train.ANCHOR_WHISPERX_MEDIAN_S)
        assert {"speedup_brainrl", "speedup_brainrl_grpo"} <= set(extra)
    else:
        assert "anchor_with_whisperx" not in row


def test_bad_arguments_fail_with_the_flag_named(capsys):
    with pytest.raises(SystemExit):
        bench_train.main(["--device", "cpu", "--tiny", "--groups", "1"])
    assert "--groups needs G >= 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_train.main(["--device", "cpu", "--tiny", "--reward", "tribe-standin"])
    assert "invalid choice" in capsys.readouterr().err

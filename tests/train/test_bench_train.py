"""scripts/bench_train.py: the word-piece policy vocabulary, the TRIBE stand-in rewards of both loops, and
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


def test_standin_rewards_of_both_loops_score_with_the_same_model():
    """The anchor's per-call path rebuilds the feature models with the resident models' weights, so it gives
    brainrl's batched fast-path rewards (up to float rounding); an empty text fails alone, with a reason."""
    from bench_tribe import make_texts

    fast, reference, info = bench_train.standin_rewards("cpu", True, "float32", "cpu", 1, 8, 0)
    try:
        texts = make_texts(3, 30, 7) + [""]
        batched = fast(completions=texts)
        one_by_one = reference(completions=texts)
        assert batched[3] is None and one_by_one[3] is None
        assert "empty" in fast.last_failures[3] and "empty" in reference.last_failures[3]
        spread = max(batched[:3]) - min(batched[:3])
        assert spread > 0
        assert max(abs(a - b) for a, b in zip(batched[:3], one_by_one[:3])) < 1e-3 * spread
        assert fast.calls >= 1 and reference.calls >= 3  # one batched call vs one call per text
        assert {"model_reload", "text_features", "audio_features", "fusion"} <= set(reference.stage_seconds)
        assert info["kind"] == "tribe-standin" and "WhisperX" in info["not_run"]
    finally:
        fast.speech.close()


@pytest.mark.slow
@pytest.mark.parametrize("reward", ["tribe-standin", "synthetic"])
def test_bench_train_runs_tiny_on_cpu(tmp_path, reward):
    out = tmp_path / "bench.json"
    assert bench_train.main(["--device", "cpu", "--tiny", "--groups", "2", "--reward", reward,
                             "--speech-workers", "1", "--out", str(out)]) == 0
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
    if reward == "tribe-standin":
        assert "model_reload" in row["anchor"]["reward_stages_s"]
        assert "model_reload" not in row["brainrl"]["reward_stages_s"]
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
        bench_train.main(["--device", "cpu", "--tiny", "--reward", "tribe"])
    assert "invalid choice" in capsys.readouterr().err

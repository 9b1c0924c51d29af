"""The offline text judge: calibration/de-mixing math, save/load, and recovery on held-out texts."""

import numpy as np
import pytest

from brainrl.sbi.judges.text import TextJudge, procedural_corpus, text_features


def test_calibrate_demixes_entangled_features_and_reports_cv_r(tmp_path):
    rng = np.random.default_rng(0)
    theta = rng.uniform(size=(300, 6))
    mixing = np.eye(6) + 0.8 * rng.normal(size=(6, 6))  # every feature reads several dimensions
    features = np.concatenate([theta @ mixing, rng.normal(size=(300, 3))], axis=1) + 0.05 * rng.normal(size=(300, 9))
    judge = TextJudge.calibrate(features, theta, groups=("markers",))
    raw = [np.corrcoef(features[:, j], theta[:, j])[0, 1] for j in range(6)]
    assert max(raw) < 0.7  # no single feature reads its dimension well: de-mixing is needed
    assert min(judge.card["cv_pearson_r"].values()) > 0.85
    assert judge.card["cv_mean_abs_offdiag"] < 0.15
    judge.save(tmp_path / "judge.npz")
    again = TextJudge.load(tmp_path)
    assert np.allclose(again.predict_features(features), judge.predict_features(features), atol=1e-12)
    with pytest.raises(ValueError, match="at least"):
        TextJudge.calibrate(features[:10], theta[:10])


def test_lexicon_and_marker_judge_reads_held_out_procedural_texts():
    """Calibrated on one procedural corpus, it reads θ from another (different seed), every dim r > 0.5."""
    groups = ("lexicon", "markers")
    texts, theta, corpus = procedural_corpus(250, seed=3)
    judge = TextJudge.calibrate(text_features(texts, groups), theta, groups, corpus=corpus)
    held_texts, held_theta, _ = procedural_corpus(120, seed=4)
    predicted = judge.predict(held_texts)
    r = [np.corrcoef(predicted[:, j], held_theta[:, j])[0, 1] for j in range(6)]
    assert min(r) > 0.5, np.round(r, 2)


def test_unknown_group_and_missing_calibration_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown judge feature groups"):
        text_features(["x"], ("vibes",))
    with pytest.raises(FileNotFoundError, match="--calibrate"):
        TextJudge.load(tmp_path / "none.npz")


@pytest.mark.slow
def test_packaged_judge_orders_hand_written_pairs():
    """The packaged calibration (with MiniLM) on texts written by hand, not by the procedural generator."""
    judge = TextJudge.load()
    pairs = {
        "certainty": ("Officials say the new bridge might perhaps open next year, though nothing is clear yet.",
                      "The new bridge will open on 3 May, the ministry confirmed today."),
        "formality": ("Folks downtown are totally stoked, the new park's gonna be awesome lol.",
                      "The municipal authority has approved the establishment of a public recreational area."),
        "valence": ("Floods destroy hundreds of homes and leave families grieving their losses.",
                    "Volunteers celebrate as the restored library reopens to joyful crowds."),
    }
    from brainrl.sbi.simulation.prior import PARAM_NAMES

    for dim, (low, high) in pairs.items():
        scores = judge.predict([low, high])[:, PARAM_NAMES.index(dim)]
        assert scores[1] > scores[0], dim

"""Tiny fit of the paper's estimator on hand-made projected data; save/load must reproduce exactly."""

import json

import numpy as np
import pytest
import torch

from brainrl.sbi.simulation.projection import Projection, fit_projection

N, T, K, V = 160, 10, 12, 40


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    theta = rng.uniform(size=(N, 6)).astype(np.float32)
    loading = rng.normal(size=(6, K))
    n_frames = rng.integers(4, T + 1, size=N)
    coeffs = np.zeros((N, T, K), np.float32)
    mask = np.zeros((N, T), np.float32)
    for i in range(N):
        coeffs[i, : n_frames[i]] = theta[i] @ loading + 0.3 * rng.normal(size=(n_frames[i], K))
        mask[i, : n_frames[i]] = 1
    basis = np.linalg.qr(rng.normal(size=(V, K)))[0].T.astype(np.float32)
    projection = Projection(mean=rng.normal(size=V).astype(np.float32), std=np.full(V, 2.0, np.float32),
                            components=basis, t_max=T)
    return {"coeffs": coeffs, "mask": mask, "theta": theta, "ids": np.arange(N), "projection": projection,
            "generator": ["hand-made"]}


def test_projection_fit_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(200, 5)) @ rng.normal(size=(5, V)) + rng.normal(scale=0.01, size=(200, V))
    proj = fit_projection(frames.astype(np.float32), k=5, t_max=6)
    assert proj.explained_variance_ratio.sum() > 0.99
    assert np.allclose(proj.components @ proj.components.T, np.eye(5), atol=1e-4)
    coeffs, n_valid, n_total = proj.project_frames(frames[:9])
    assert coeffs.shape == (6, 5) and (n_valid, n_total) == (6, 9)
    proj.save(tmp_path)
    again = Projection.load(tmp_path)
    assert np.array_equal(again.components, proj.components) and again.fingerprint() == proj.fingerprint()
    with pytest.raises(ValueError, match="lower projection.k"):
        fit_projection(frames[:4].astype(np.float32), k=5)


def test_fit_save_load_exact_and_posterior_api(tmp_path):
    from brainrl.sbi.inference.estimator import EstimatorConfig, Posterior, fit_posterior

    arrays = _arrays()
    # the paper's epoch schedule (no step floor), so exactly 3 epochs: this test is about the API, not learning
    config = EstimatorConfig(max_epochs=3, verbose=0, learning_rate=1e-3, sampler={"method": "euler", "steps": 10},
                             min_steps=0, min_steps_per_epoch=1, min_val_draws=1)
    result = fit_posterior(arrays, tmp_path / "post", config)
    assert torch.is_grad_enabled()  # import bayesflow turns grads off process-wide; we restore them
    assert result.epochs == 3 and result.n_train + result.n_val + result.n_test == N
    meta = json.loads((tmp_path / "post" / "posterior.json").read_text())
    assert meta["config"]["flow_widths"] == [128, 128] and meta["versions"]["bayesflow"] == "2.0.12"
    assert set(meta["history"]) >= {"loss", "val_loss", "learning_rate"}
    assert meta["training"]["input_standardisation"].startswith("per-component")
    assert (tmp_path / "post" / "input_scaling.npz").is_file()

    post = Posterior.load(tmp_path / "post")
    test_rows = np.array(meta["splits"]["test"][:8])
    inputs = (arrays["coeffs"][test_rows], arrays["mask"][test_rows])
    draws = post.sample(inputs, n=30, seed=3)
    assert draws.shape == (len(test_rows), 30, 6) and draws.min() >= 0 and draws.max() <= 1
    reloaded = Posterior.load(tmp_path / "post")
    assert np.array_equal(reloaded.sample(inputs, n=30, seed=3), draws)
    assert np.array_equal(reloaded.summaries(inputs), post.summaries(inputs))
    assert post.summaries(inputs).shape == (len(test_rows), 128)
    assert post.mean(inputs, n=30, seed=3).shape == (len(test_rows), 6)

    # sampling runs without autograd (import_bayesflow turns grads on for training; a graph per Euler step
    # grew the diagnose process by ~700 MB per batch) and bounds cases x draws per call
    from brainrl.sbi.inference.estimator import MAX_SAMPLE_ROWS

    calls = []
    original = post.approximator.sample

    def spy(*args, **kwargs):
        calls.append((torch.is_grad_enabled(), len(kwargs["conditions"]["coeffs"])))
        return original(*args, **kwargs)

    post.approximator.sample = spy
    n_big = MAX_SAMPLE_ROWS // 2
    assert post.sample(inputs, n=n_big, seed=3).shape == (len(test_rows), n_big, 6)
    assert calls and not any(grad for grad, _ in calls) and max(size for _, size in calls) == 2
    assert torch.is_grad_enabled()
    post.approximator.sample = original

    # padded frames do not leak into the summary
    noisy = arrays["coeffs"][test_rows].copy()
    noisy[arrays["mask"][test_rows] == 0] = 1e3
    assert np.allclose(post.summaries((noisy, inputs[1])), post.summaries(inputs), atol=1e-5)

    # raw (T, V) sequences and BrainMap-like objects go through the stored standardisation + PCA
    raw = np.random.default_rng(1).normal(size=(7, V)).astype(np.float32)
    coeffs, mask = post.prepare([raw])
    expected, _, _ = arrays["projection"].project_frames(raw)
    assert np.allclose(coeffs[0], expected) and mask[0].sum() == 7
    with pytest.raises(ValueError, match="coeffs"):
        post.prepare((np.zeros((1, 3, 3)), np.zeros((1, 3))))


def test_training_budget_pads_small_campaigns_and_keeps_the_paper_schedule_for_large_ones():
    from brainrl.sbi.inference.estimator import EstimatorConfig, training_budget

    config = EstimatorConfig()
    small = training_budget(329, 31, config)  # the old offline campaign
    assert small["steps_per_epoch"] >= config.min_steps_per_epoch
    assert small["early_stopping_from_epoch"] * small["steps_per_epoch"] >= config.min_steps
    assert 31 * small["val_repeats"] >= config.min_val_draws
    large = training_budget(8000, 1000, config)  # the paper's size: 250 steps per epoch, no padding
    assert large["train_repeats_per_epoch"] == 1 and large["max_epochs"] == config.max_epochs
    assert large["val_repeats"] == 3


def test_input_scaling_standardises_valid_frames_and_keeps_padding_zero():
    from brainrl.sbi.inference.estimator import InputScaling

    rng = np.random.default_rng(0)
    coeffs = rng.normal(size=(20, 6, 3)) * np.array([100.0, 1.0, 0.01]) + 5.0
    mask = (np.arange(6)[None, :] < rng.integers(2, 7, size=20)[:, None]).astype(np.float32)
    scaling = InputScaling.fit(coeffs, mask)
    z = scaling.apply(coeffs, mask)
    valid = z[mask > 0]
    # float32 output: an offset of 5 on an SD of 0.01 leaves ~1e-5 of rounding in the mean
    assert np.allclose(valid.mean(axis=0), 0, atol=1e-4) and np.allclose(valid.std(axis=0), 1, atol=1e-4)
    assert np.all(z[mask == 0] == 0)


def test_bayesflow_autograd_notice_and_info_lines_are_quiet(caplog):
    import logging

    from brainrl.sbi.inference.estimator import import_bayesflow

    import_bayesflow()
    bf_log = logging.getLogger("bayesflow")
    with caplog.at_level(logging.INFO):
        bf_log.warning("When using torch backend, we need to disable autograd by default to avoid excessive memory")
        bf_log.info("Building on a test batch.")
        bf_log.warning("a real problem")
    messages = [r.getMessage() for r in caplog.records if r.name == "bayesflow"]
    assert messages == ["a real problem"]
    assert torch.is_grad_enabled()  # the notice is moot: brainrl turned autograd back on


def test_fit_on_two_campaigns_keeps_each_campaigns_split_and_records_both(tmp_path):
    """The paper's "Both" model: two campaigns with overlapping ids (0..N-1 each) fitted together."""
    from brainrl.sbi.inference.estimator import EstimatorConfig, Posterior, fit_posterior, heldout_rows

    a, b = _arrays(0), _arrays(1)
    both = {key: np.concatenate([a[key], b[key]]) for key in ("coeffs", "mask", "theta", "ids")}
    both.update(projection=a["projection"], generator=["a", "b"], source=np.repeat([0, 1], N),
                manifests=[{"fingerprint": "campaign-a", "config": {"name": "a"}},
                           {"fingerprint": "campaign-b", "config": {"name": "b"}}])
    config = EstimatorConfig(max_epochs=1, verbose=0, min_steps=0, min_steps_per_epoch=1, min_val_draws=1,
                             sampler={"method": "euler", "steps": 5})
    result = fit_posterior(both, tmp_path / "post", config, data_dir=["A", "B"])
    meta = Posterior.load(tmp_path / "post").meta
    assert [c["fingerprint"] for c in meta["campaigns"]] == ["campaign-a", "campaign-b"]
    assert meta["data"]["dir"] == ["A", "B"]
    test_a = heldout_rows(a["ids"], meta, "test")  # each campaign's own id split, as if fitted alone
    assert result.n_test == 2 * len(test_a) and len(test_a) > 0


def test_crps_of_draws_matches_the_normal_closed_form():
    from brainrl.sbi.inference.estimator import crps_of_draws

    draws = np.random.default_rng(0).normal(size=(1, 20000, 1))
    # CRPS(N(0, 1), 0) = 2 φ(0) − 1/√π
    assert abs(crps_of_draws(draws, np.zeros((1, 1)))[0, 0] - (2 / np.sqrt(2 * np.pi) - 1 / np.sqrt(np.pi))) < 0.005


def test_spread_calibration_widens_an_overconfident_posterior():
    """Draws half as wide (in logit space) as the truth's scatter about the centre: the factor found on
    held-out items is ~2, CRPS drops, the centres stay, and ``sample`` applies it from the card."""
    from brainrl.sbi.inference.estimator import Posterior, scale_spread, spread_calibration

    rng = np.random.default_rng(0)
    n, names = 400, ("a", "b")
    centre = rng.normal(size=(n, 2))
    truth = 1 / (1 + np.exp(-(centre + 0.6 * rng.normal(size=(n, 2)))))

    class Overconfident(Posterior):
        def __init__(self):
            self.meta, self.param_names, self.calls = {}, names, []

        def prepare(self, inputs):
            return inputs

        def sample(self, inputs, n=500, seed=0, batch_size=64, calibrate=True, **integrate):
            self.calls.append(calibrate)
            rows = np.asarray(inputs[0])[:, 0, 0].astype(int)
            z = centre[rows][:, None, :] + 0.3 * np.random.default_rng(seed).normal(size=(len(rows), n, 2))
            draws = (1 / (1 + np.exp(-z))).astype(np.float32)
            factors = (self.meta.get("spread_calibration") or {}).get("factor")
            return scale_spread(draws, np.array([factors[k] for k in names])) if calibrate and factors else draws

    post = Overconfident()
    coeffs = np.arange(n, dtype=np.float32).reshape(n, 1, 1)
    result = spread_calibration(post, coeffs, np.ones((n, 1)), truth, n_samples=200)
    assert post.calls == [False]  # calibrated on the raw draws
    assert all(abs(f - 2.0) <= 0.2 for f in result["factor"].values()), result["factor"]
    assert all(result["crps_calibrated"][k] < result["crps_raw"][k] for k in names)
    post.meta["spread_calibration"] = result
    wide = post.sample((coeffs, None), 200)
    z = np.log(wide) - np.log1p(-wide)
    assert np.allclose(z.std(axis=1).mean(axis=0), 0.3 * np.array(list(result["factor"].values())), rtol=0.05)
    raw = post.sample((coeffs, None), 200, calibrate=False)
    assert np.allclose(np.log(raw / (1 - raw)).mean(axis=1), z.mean(axis=1), atol=1e-4)


def test_step_floor_delays_the_stop_but_the_best_epoch_before_it_is_restored():
    """EarlyStopping + the step floor: no stop before the floor epoch, then the weights of the best
    validation epoch overall (here epoch 2, before the floor) are restored."""
    from brainrl.sbi.inference.estimator import import_bayesflow, step_floor_callback

    import_bayesflow()
    import keras

    class Model:
        stop_training = False

        def get_weights(self):
            return [np.array(self.epoch)]

        def set_weights(self, weights):
            self.restored = int(weights[0])

    model = Model()
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    callbacks = [stop, step_floor_callback(6)]
    for cb in callbacks:
        cb.set_model(model)
    losses = [1.0, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    ran = 0
    for epoch, loss in enumerate(losses):
        model.epoch = epoch
        ran += 1
        for cb in callbacks:
            cb.on_epoch_end(epoch, {"val_loss": loss})
        if model.stop_training:
            break
    stop.on_train_end()
    assert ran == 6 and model.restored == 1  # stopped at the floor (epoch 6), weights of epoch 2 (index 1)

import pytest


@pytest.fixture(scope="session")
def lexical_posterior(tmp_path_factory):
    """A real BayesFlow posterior fitted on 300 items of the known lexical channel (``lexical_channel``),
    with the small-campaign budget; shared by the recovery and validator tests. Returns (folder, arrays)."""
    from brainrl.sbi.inference.estimator import EstimatorConfig, fit_posterior
    from lexical_channel import LexicalChannel

    arrays = LexicalChannel().campaign(300)
    config = EstimatorConfig(verbose=0, min_steps=600, min_steps_per_epoch=50, early_stopping_patience=4,
                             lr_patience=2, learning_rate=1e-3, sampler={"method": "euler", "steps": 20})
    folder = tmp_path_factory.mktemp("lexical") / "post"
    fit_posterior(arrays, folder, config)
    return folder, arrays

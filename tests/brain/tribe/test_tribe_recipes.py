"""The shipped TRIBE recipes run TRIBE in its worker environment, never inside the training process."""

from pathlib import Path

import pytest

from brainrl.brain.tribe import TribeBrainModel
from brainrl.train.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("trainer", ["awsft", "grpo"])
def test_tribe_recipes_use_the_worker(trainer):
    recipe = load_recipe(ROOT / f"recipes/qwen_tribe_broca_{trainer}.yaml")
    assert recipe.brain.model == "tribe"
    assert recipe.brain.model_kwargs["worker"] is True
    assert recipe.brain.model_kwargs["python"] == ".venv-tribe/bin/python"  # what scripts/setup_tribe.sh builds
    # the shipped recipes take the direct predict path (TRIBE's tensors without its DataFrame; tribe_real tier)
    from brainrl.brain.tribe.config import TribeConfig

    config = {k: v for k, v in recipe.brain.model_kwargs.items() if k not in ("worker", "python")}
    assert TribeConfig.from_dict(config).predict_path == "direct"


def test_missing_worker_interpreter_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="setup_tribe.sh"):
        TribeBrainModel(worker=True, python=str(tmp_path / "nope/bin/python"), checkpoint_dir=str(tmp_path))

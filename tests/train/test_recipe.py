from pathlib import Path

import pytest

from brainrl.train.config import RecipeConfig
from brainrl.train.recipe import RecipeError, apply_overrides, load_recipe, recipe_from_dict

ROOT = Path(__file__).resolve().parents[2]
TRAINING_RECIPES = ("offline_broca.yaml", "offline_broca_grpo.yaml", "qwen_tribe_broca_awsft.yaml",
                    "qwen_tribe_broca_grpo.yaml")
RECIPES = [ROOT / "recipes" / name for name in TRAINING_RECIPES]
BASE = {"rewards": [{"path": "rewards/broca.py"}]}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_load(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, RecipeConfig)
    assert recipe.rewards[0].path.startswith("rewards/")
    assert recipe.trainer in ("awsft", "grpo")


def test_shipped_recipe_set():
    assert all(p.exists() for p in RECIPES)
    offline = load_recipe(ROOT / "recipes/offline_broca.yaml")
    assert offline.policy.model == "smollm2" and offline.brain.model == "synthetic" and offline.trainer == "awsft"
    awsft, grpo = (load_recipe(ROOT / f"recipes/qwen_tribe_broca_{t}.yaml") for t in ("awsft", "grpo"))
    assert awsft.brain.model == grpo.brain.model == "tribe"
    assert awsft.policy.model.startswith("Qwen/")


def test_unknown_field_names_field_and_suggests():
    with pytest.raises(RecipeError, match=r"awsft\.stpes.*Did you mean 'steps'"):
        recipe_from_dict({**BASE, "awsft": {"stpes": 3}})
    with pytest.raises(RecipeError, match=r"Unknown field recipe\.polcy"):
        recipe_from_dict({**BASE, "polcy": {}})
    with pytest.raises(RecipeError, match=r"policy\.lora\.rank.*Did you mean 'r'|policy\.lora\.rank"):
        recipe_from_dict({**BASE, "policy": {"lora": {"rank": 8}}})


def test_wrong_types_and_values_fail_with_the_field():
    with pytest.raises(RecipeError, match=r"awsft\.steps: expected an integer"):
        recipe_from_dict({**BASE, "awsft": {"steps": "ten"}})
    with pytest.raises(RecipeError, match=r"trainer.*'ppo' is not one of"):
        recipe_from_dict({**BASE, "trainer": "ppo"})
    with pytest.raises(RecipeError, match=r"sampling.*top_p"):
        recipe_from_dict({**BASE, "sampling": {"top_p": 1.5}})
    with pytest.raises(RecipeError, match=r"brain.*Unknown brain model 'synthtic'.*synthetic"):
        recipe_from_dict({**BASE, "brain": {"model": "synthtic"}})
    with pytest.raises(RecipeError, match="at least one reward"):
        recipe_from_dict({})
    with pytest.raises(RecipeError, match=r"rewards\[0\]\.wieght"):
        recipe_from_dict({"rewards": [{"path": "rewards/broca.py", "wieght": 2}]})


def test_overrides_parse_yaml_values_and_validate():
    recipe = recipe_from_dict(BASE, ["awsft.steps=10", "sampling.temperature=0.7", "policy.lora.target_modules=[q_proj]",
                                     "data.system_prompt=null"])
    assert recipe.awsft.steps == 10 and recipe.sampling.temperature == 0.7
    assert recipe.policy.lora.target_modules == ["q_proj"] and recipe.data.system_prompt is None
    with pytest.raises(RecipeError, match=r"awsft\.step\b.*Did you mean 'steps'"):
        recipe_from_dict(BASE, ["awsft.step=10"])
    with pytest.raises(RecipeError, match="section.field=value"):
        apply_overrides({}, ["awsft.steps"])


def test_int_accepted_for_float_but_bool_rejected_for_int():
    assert recipe_from_dict(BASE, ["awsft.learning_rate=1e-3"]).awsft.learning_rate == 1e-3  # YAML 1.1 string
    with pytest.raises(RecipeError, match="expected a number"):
        recipe_from_dict(BASE, ["awsft.learning_rate=fast"])
    recipe = recipe_from_dict({**BASE, "awsft": {"learning_rate": 1}})
    assert recipe.awsft.learning_rate == 1.0 and isinstance(recipe.awsft.learning_rate, float)
    with pytest.raises(RecipeError, match="expected an integer"):
        recipe_from_dict({**BASE, "awsft": {"steps": True}})


def test_missing_recipe_file():
    with pytest.raises(FileNotFoundError, match="recipes/"):
        load_recipe("nope.yaml")

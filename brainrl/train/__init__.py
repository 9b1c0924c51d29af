"""Training: recipes (YAML → typed configs), the AWSFT loop, GRPO through TRL, held-out evaluation."""

from brainrl.train.config import (
    AWSFTConfig,
    DataConfig,
    EvalConfig,
    GRPORecipeConfig,
    LoggingConfig,
    PolicyConfig,
    RecipeConfig,
)
from brainrl.train.recipe import RecipeError, load_recipe, recipe_from_dict

__all__ = [
    "AWSFTConfig",
    "DataConfig",
    "EvalConfig",
    "GRPORecipeConfig",
    "LoggingConfig",
    "PolicyConfig",
    "RecipeConfig",
    "RecipeError",
    "load_recipe",
    "recipe_from_dict",
    "run_recipe",
]


def run_recipe(recipe: RecipeConfig, *, resume: bool = False, overwrite: bool = False, evaluate: bool | None = None):
    """Train with the recipe's trainer, then (if ``eval.enabled``) run the held-out evaluation."""
    do_eval = recipe.eval.enabled if evaluate is None else evaluate
    # everything checkable (prompt files, eval ROI, rewards on a test batch, a resumed recipe) fails here,
    # before the policy loads
    from brainrl.train.preflight import preflight

    funcs, weights = preflight(recipe, resume=resume, overwrite=overwrite, evaluate=do_eval)
    if recipe.trainer == "awsft":
        from brainrl.train.awsft import AWSFTTrainer

        summary = AWSFTTrainer(recipe, reward_funcs=funcs, reward_weights=weights, resume=resume,
                               overwrite=overwrite).train()
    else:
        from brainrl.train.grpo import train_grpo

        summary = train_grpo(recipe, reward_funcs=funcs, reward_weights=weights, resume=resume, overwrite=overwrite)
    result = None
    if do_eval:
        from accelerate import PartialState

        if PartialState().is_main_process:
            from brainrl.train.evaluate import evaluate_run, print_eval

            result = evaluate_run(recipe.output_dir)
            print_eval(result)
    return {"train": summary, "eval": result}

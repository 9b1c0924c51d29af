"""θ-target reward: the brain map of a completion, decoded by the SBI posterior, should land on the θ*
its prompt asked for (valence, arousal, dominance, subjectivity, certainty, formality).

A recipe passes the settings as kwargs, e.g.::

    rewards:
      - path: rewards/theta_target.py
        kwargs: {posterior: runs/sbi_procedural/posterior,
                 mode: expected, n_samples: 64, ood: downweight, ood_threshold: 0.05}

Copy this file to change the defaults: a subset of dimensions (``dims: [valence, formality]``),
per-dimension ``weights``, ``mode: mean`` (distance of the posterior mean only), or the OOD action
(``log``, ``downweight``, ``none`` = no reward for flagged items, ``off``).
"""

from pathlib import Path

from brainrl.sbi.theta.reward import ThetaTargetReward

DEFAULTS = {"posterior": "runs/sbi_procedural/posterior", "mode": "expected", "n_samples": 64, "ood": "downweight",
            "ood_threshold": 0.05}


REPO = Path(__file__).resolve().parent.parent


def _resolve(path):
    """A relative path as given if it exists from here, else from the repository root (recipes name
    repo-relative paths)."""
    path = Path(path)
    return str(path if path.is_absolute() or path.exists() or not (REPO / path).exists() else REPO / path)


def make_reward(**kwargs):
    settings = {**DEFAULTS, **kwargs}
    if isinstance(settings["posterior"], (str, Path)):
        settings["posterior"] = _resolve(settings["posterior"])
    prompts = settings.get("prompts")
    if prompts:
        settings["prompts"] = [_resolve(p) for p in ([prompts] if isinstance(prompts, (str, Path)) else prompts)]
    return ThetaTargetReward(**settings)

"""θ-target reward: the brain map of a completion, decoded by the SBI posterior, should land on the θ*
its prompt asked for (valence, arousal, dominance, subjectivity, certainty, formality).

A recipe passes the settings as kwargs, e.g.::

    rewards:
      - path: rewards/theta_target.py
        kwargs: {posterior: runs/sbi/posterior_offline, prompts: [recipes/data/theta_train.jsonl],
                 mode: expected, n_samples: 64, ood: downweight, ood_threshold: 0.05}

Copy this file to change the defaults: a subset of dimensions (``dims: [valence, formality]``),
per-dimension ``weights``, ``mode: mean`` (distance of the posterior mean only), or the OOD action
(``log``, ``downweight``, ``none`` = no reward for flagged items, ``off``).
"""

from brainrl.rewards import ThetaTargetReward

DEFAULTS = {"posterior": "runs/sbi/posterior_offline", "mode": "expected", "n_samples": 64, "ood": "downweight",
            "ood_threshold": 0.05}


def make_reward(**kwargs):
    return ThetaTargetReward(**{**DEFAULTS, **kwargs})

"""brainrl: RL fine-tuning of language models with brain-derived rewards.

The data path is ``text -> Stimulus (speech + word timings) -> BrainMap (T x 20,484, fsaverage5)
-> reward``. Sub-packages: ``stimulus``, ``brain``, ``cortex``, ``rewards``, ``policy``, ``train``,
``sbi``, ``report`` and ``cli``; import what you use, nothing heavy is imported here.
"""

__version__ = "0.1.0"

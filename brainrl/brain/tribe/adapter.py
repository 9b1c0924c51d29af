"""``TribeBrainModel``: TRIBE v2 behind brainrl's BrainModel interface, in-process or in a worker."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from brainrl.brain.base import BrainMap, BrainModel, Failed, Prediction
from brainrl.brain.tribe.config import TribeConfig
from brainrl.stimulus import Stimulus

log = logging.getLogger(__name__)


class TribeBrainModel(BrainModel):
    """TRIBE v2 (facebook/tribev2 at a pinned revision) predicting fsaverage5 maps at 1 TR = 1 s.

    ``worker=True`` runs TRIBE in a subprocess of ``python`` (the environment built by
    scripts/setup_tribe.sh, whose pins clash with a modern training stack); a crash or stall there
    turns the affected items into ``Failed`` and the worker is restarted. ``worker=False`` imports
    ``tribev2`` in this process. Other keyword arguments are ``TribeConfig`` fields.
    """

    name = "tribe"

    def __init__(
        self,
        *,
        worker: bool = False,
        python: str | None = None,
        worker_env: dict[str, str] | None = None,
        worker_pythonpath: list[str] | None = None,
        load_timeout: float = 1800.0,
        predict_timeout: float = 120.0,
        per_item_timeout: float = 10.0,
        **config: Any,
    ):
        self.config = TribeConfig.from_dict(config)
        self.worker = worker
        self._engine = None
        self._client = None
        if worker:
            from brainrl.brain.tribe.client import WorkerClient, WorkerConfig

            settings = WorkerConfig(
                env=dict(worker_env or {}),
                pythonpath=list(worker_pythonpath or []),
                load_timeout=load_timeout,
                predict_timeout=predict_timeout,
                per_item_timeout=per_item_timeout,
            )
            if python:
                if not Path(python).is_file():
                    raise FileNotFoundError(
                        f"TRIBE worker interpreter {python!r} does not exist (relative paths start at {Path.cwd()}). "
                        "Build the TRIBE environment with scripts/setup_tribe.sh, or set brain.model_kwargs.python "
                        "to its bin/python."
                    )
                settings.python = os.path.abspath(python)  # not resolve(): a venv python is a symlink
            self._client = WorkerClient(self.config.to_dict(), settings)
        else:
            from brainrl.brain.tribe.engine import TribeEngine

            self._engine = TribeEngine(self.config)

    def identity(self) -> dict[str, Any]:
        if self._client is not None:
            return self._client.start()
        return self._engine.identity()

    def predict(self, stimuli: Sequence[Stimulus]) -> list[Prediction]:
        stimuli = list(stimuli)
        if not stimuli:
            return []
        if self._client is not None:
            raw = self._client.predict(stimuli)
            identity = dict(self._client.identity or {})
        else:
            raw = self._engine.predict(stimuli)
            identity = self._engine.identity()
        out: list[Prediction] = []
        for stimulus, value in zip(stimuli, raw):
            if isinstance(value, str):
                log.warning("TRIBE item failed (%r...): %s", stimulus.text[:40], value)
                out.append(Failed(value))
                continue
            provenance = {"brain_model": identity, **stimulus.provenance()}
            try:
                out.append(BrainMap(value, provenance=provenance))
            except ValueError as error:
                out.append(Failed(f"TRIBE returned an unusable array: {error}"))
        return out

    @property
    def worker_pid(self) -> int | None:
        return self._client.pid if self._client is not None else None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

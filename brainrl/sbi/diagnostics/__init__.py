"""Layer 4, how good is a posterior: recovery, calibration, cross-generator transfer, side by side with
the text-only baselines. Imports the layers below (simulation, judges, inference)."""

"""fsaverage5 cortex: Destrieux labels, the ROI registry, ROI statistics and surface plots.

A leaf package: it imports nothing else from brainrl.
"""

from brainrl.cortex.atlas import HEMISPHERES, N_VERTICES, N_VERTICES_HEMI, DestrieuxAtlas, load_destrieux

__all__ = ["HEMISPHERES", "N_VERTICES", "N_VERTICES_HEMI", "DestrieuxAtlas", "load_destrieux"]

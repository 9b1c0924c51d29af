"""fsaverage5 cortex: Destrieux labels, the ROI registry, ROI statistics and surface plots.

A leaf package: it imports nothing else from brainrl except ``registry`` and ``provenance``.
Plotting (``brainrl.cortex.plot``) is imported on demand because it loads matplotlib and nilearn.
"""

from brainrl.cortex.atlas import HEMISPHERES, N_VERTICES, N_VERTICES_HEMI, DestrieuxAtlas, load_destrieux, load_mesh
from brainrl.cortex.rois import (
    ANCHOR_ROI_NAMES,
    ROI,
    describe_rois,
    destrieux_label_names,
    get_roi,
    list_rois,
    parse_roi_spec,
    register_roi,
    resolve_mask,
)
from brainrl.cortex.stats import (
    ROIAverager,
    as_maps,
    averaging_matrix,
    global_mean,
    roi_mean,
    roi_table,
    roi_timecourse,
    selectivity,
)


def plot_surface(*args, **kwargs):
    """See ``brainrl.cortex.plot.plot_surface`` (imported lazily)."""
    from brainrl.cortex.plot import plot_surface as _plot_surface

    return _plot_surface(*args, **kwargs)


def plot_roi(*args, **kwargs):
    """See ``brainrl.cortex.plot.plot_roi`` (imported lazily)."""
    from brainrl.cortex.plot import plot_roi as _plot_roi

    return _plot_roi(*args, **kwargs)


__all__ = [
    "ANCHOR_ROI_NAMES", "HEMISPHERES", "N_VERTICES", "N_VERTICES_HEMI", "DestrieuxAtlas", "ROI", "ROIAverager",
    "as_maps", "averaging_matrix", "describe_rois", "destrieux_label_names", "get_roi", "global_mean",
    "list_rois", "load_destrieux", "load_mesh", "parse_roi_spec", "plot_roi", "plot_surface",
    "register_roi", "resolve_mask", "roi_mean", "roi_table", "roi_timecourse", "selectivity",
]

"""Regions of interest on fsaverage5: named presets, custom label sets and mask files.

An ``ROI`` is either a set of Destrieux labels in one or both hemispheres or an explicit list of
vertex indices (from a mask file). Every ROI resolves to a boolean (20,484,) mask, left hemisphere
first. Presets, their labels and what changed against the anchor experiment are listed in docs/rois.md.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from brainrl.cortex.atlas import N_VERTICES, N_VERTICES_HEMI, load_destrieux
from brainrl.provenance import content_hash
from brainrl.registry import unknown_name_error

HEMISPHERE_CHOICES = ("left", "right", "both")
_HEMISPHERE_ALIASES = {"left": "left", "right": "right", "both": "both", "bilateral": "both"}
NON_CORTEX_LABELS = ("Unknown", "Medial_wall")
_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
MASK_FILE_SUFFIXES = (".npy", ".txt")
SPEC_HELP = (
    "An ROI is a preset name (see list_rois()), 'labels:LABEL[,LABEL...][@left|right|both]' "
    "or 'mask:PATH.npy|PATH.txt'; prefix 'NAME=' to name a custom one."
)


def normalize_hemisphere(hemisphere: str) -> str:
    """'left', 'right' or 'both' ('bilateral' is accepted as the anchor repo's word for 'both')."""
    key = str(hemisphere).strip().lower()
    if key not in _HEMISPHERE_ALIASES:
        raise ValueError(f"Unknown hemisphere {hemisphere!r}; choose one of {', '.join(HEMISPHERE_CHOICES)}.")
    return _HEMISPHERE_ALIASES[key]


def destrieux_label_names() -> tuple[str, ...]:
    """The 74 cortical Destrieux label names (without ``Unknown`` and ``Medial_wall``)."""
    return tuple(n for n in load_destrieux().names if n not in NON_CORTEX_LABELS)


def check_label_names(labels: Iterable[str]) -> None:
    """Raise a KeyError naming the closest Destrieux labels for any label that does not exist."""
    names = list(load_destrieux().names)
    for label in labels:
        if label not in names:
            raise unknown_name_error(
                "Destrieux label", label, [n for n in names if n != "Unknown"],
                hint="Labels are case-sensitive aparc.a2009s names.",
            )


@functools.lru_cache(maxsize=512)
def _label_mask(labels: tuple[str, ...], hemisphere: str) -> np.ndarray:
    mask = load_destrieux().mask(labels, hemisphere)
    mask.setflags(write=False)
    return mask


def _hemisphere_of(indices: np.ndarray) -> str:
    has_left = bool((indices < N_VERTICES_HEMI).any())
    has_right = bool((indices >= N_VERTICES_HEMI).any())
    return "both" if has_left and has_right else ("left" if has_left else "right")


@dataclass(frozen=True)
class ROI:
    """A cortical region on fsaverage5.

    Give either ``labels`` (Destrieux names, combined with ``hemisphere``) or ``vertices`` (explicit
    indices into the 20,484-vertex map; ``hemisphere`` is then derived from them). Construction
    checks the labels and that the region is not empty, so a bad ROI fails before any model runs.
    """

    name: str
    labels: tuple[str, ...] = ()
    hemisphere: str | None = None
    description: str = ""
    vertices: tuple[int, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("An ROI needs a non-empty name.")
        if isinstance(self.labels, str):
            raise TypeError(f"ROI {self.name!r}: labels must be a list of label names, not the string {self.labels!r}.")
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.vertices is not None:
            if self.labels:
                raise ValueError(f"ROI {self.name!r}: give labels or vertices, not both.")
            indices = np.unique(np.asarray(self.vertices, dtype=np.int64))
            if indices.size == 0:
                raise ValueError(f"ROI {self.name!r} has no vertices.")
            if indices[0] < 0 or indices[-1] >= N_VERTICES:
                raise ValueError(
                    f"ROI {self.name!r}: vertex indices must lie in 0..{N_VERTICES - 1} "
                    f"(got {indices[0]}..{indices[-1]})."
                )
            derived = _hemisphere_of(indices)
            if self.hemisphere is not None and normalize_hemisphere(self.hemisphere) != derived:
                raise ValueError(
                    f"ROI {self.name!r}: hemisphere={self.hemisphere!r} but its vertices lie in {derived!r}."
                )
            object.__setattr__(self, "vertices", tuple(int(i) for i in indices))
            object.__setattr__(self, "hemisphere", derived)
            return
        if not self.labels:
            raise ValueError(f"ROI {self.name!r}: give at least one Destrieux label (or vertices).")
        check_label_names(self.labels)
        object.__setattr__(self, "hemisphere", normalize_hemisphere(self.hemisphere or "both"))
        if not _label_mask(self.labels, self.hemisphere).any():
            raise ValueError(f"ROI {self.name!r}: labels {list(self.labels)} have no vertices in {self.hemisphere!r}.")

    # constructors ---------------------------------------------------------------------------------
    @classmethod
    def from_labels(
        cls, name: str, labels: Sequence[str], hemisphere: str = "both", description: str = ""
    ) -> "ROI":
        """An ROI made of Destrieux labels in ``hemisphere`` ("left", "right" or "both")."""
        return cls(name=name, labels=tuple(labels), hemisphere=hemisphere, description=description)

    @classmethod
    def from_mask_file(cls, path: str | Path, name: str | None = None, description: str = "") -> "ROI":
        """An ROI from a file: a boolean or 0/1 ``.npy``/``.txt`` of 20,484 values, or integer
        vertex indices (0..20,483) in ``.npy`` or ``.txt`` (whitespace or comma separated, ``#`` comments)."""
        path = Path(path)
        values = _read_mask_file(path)
        indices = _indices_from_array(values, source=str(path))
        return cls(
            name=name or path.stem,
            vertices=tuple(int(i) for i in indices),
            description=description or f"vertices from {path.name}",
        )

    # views ----------------------------------------------------------------------------------------
    def mask(self) -> np.ndarray:
        """Boolean (20,484,) mask, left hemisphere first (a fresh, writable copy)."""
        if self.vertices is not None:
            out = np.zeros(N_VERTICES, dtype=bool)
            out[list(self.vertices)] = True
            return out
        return _label_mask(self.labels, self.hemisphere).copy()

    @property
    def n_vertices(self) -> int:
        return len(self.vertices) if self.vertices is not None else int(_label_mask(self.labels, self.hemisphere).sum())

    def vertex_indices(self) -> np.ndarray:
        """Sorted indices of the ROI's vertices in the 20,484-vertex map."""
        return np.flatnonzero(self.mask())

    def spec(self) -> str | None:
        """The compact string that ``parse_roi_spec`` turns back into this region; None for a
        vertex-defined ROI (save its ``mask()`` with ``np.save`` and use ``mask:PATH``)."""
        if self.vertices is not None:
            return None
        return f"labels:{','.join(self.labels)}@{self.hemisphere}"

    def provenance(self) -> dict[str, Any]:
        """What identifies the region in results and cache keys (the vertex set is hashed)."""
        return {
            "name": self.name,
            "labels": list(self.labels),
            "hemisphere": self.hemisphere,
            "n_vertices": self.n_vertices,
            "vertices_sha256": content_hash([int(i) for i in self.vertex_indices()], length=16),
            "atlas": "destrieux_fsaverage5",
        }


# mask files -----------------------------------------------------------------------------------------
def _read_mask_file(path: Path) -> np.ndarray:
    if path.suffix.lower() not in MASK_FILE_SUFFIXES:
        raise ValueError(f"Mask file {path} must end in .npy or .txt (got {path.suffix or 'no suffix'!r}).")
    if not path.is_file():
        raise FileNotFoundError(f"Mask file {path} does not exist.")
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False)
    tokens = re.sub(r"#[^\n]*", " ", path.read_text()).replace(",", " ").split()
    values = []
    for token in tokens:
        try:
            number = float(token)
        except ValueError:
            raise ValueError(f"Mask file {path}: {token!r} is not a number.") from None
        values.append(number)
    return np.asarray(values)


def _indices_from_array(values: np.ndarray, source: str = "mask") -> np.ndarray:
    """Vertex indices from a boolean/0-1 mask of length 20,484 or from an integer index list."""
    values = np.asarray(values)
    if values.ndim > 1 and sum(d > 1 for d in values.shape) <= 1:
        values = values.reshape(-1)
    if values.ndim != 1:
        raise ValueError(f"{source}: expected a 1-D mask or index list, got shape {values.shape}.")
    if values.size == 0:
        raise ValueError(f"{source} is empty.")
    if values.dtype.kind not in "biuf":
        raise ValueError(f"{source}: expected booleans or integers, got dtype {values.dtype}.")
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ValueError(f"{source} contains NaN or infinite values.")
    binary = values.dtype == bool or bool(np.isin(values, (0, 1)).all())
    if values.dtype == bool or (binary and values.size > 2):
        if values.size != N_VERTICES:
            raise ValueError(
                f"{source}: a boolean/0-1 mask must have {N_VERTICES} values (fsaverage5: "
                f"{N_VERTICES_HEMI} left then {N_VERTICES_HEMI} right), got {values.size}."
            )
        indices = np.flatnonzero(values)
        if indices.size == 0:
            raise ValueError(f"{source}: the mask selects no vertices.")
        return indices
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        raise ValueError(f"{source}: vertex indices must be integers (found non-integer values).")
    indices = values.astype(np.int64)
    bad = indices[(indices < 0) | (indices >= N_VERTICES)]
    if bad.size:
        raise ValueError(
            f"{source}: vertex indices must lie in 0..{N_VERTICES - 1}; {bad.size} are out of range "
            f"(e.g. {int(bad[0])})."
        )
    return np.unique(indices)


# presets --------------------------------------------------------------------------------------------
# The anchor experiment's 20 regions (Shaunakm07/Brain-LLM-Fine-Tuning, tribe_inference.py), in its
# order, with the labelling fixed where it was wrong (docs/rois.md says what changed and why).
ANCHOR_ROI_NAMES = (
    "broca", "wernicke", "auditory", "sts", "angular", "supramarginal", "default_mode", "anterior_cingulate",
    "dlpfc", "superior_frontal", "v1", "lateral_occipital", "fusiform", "parahippocampal", "insula",
    "middle_temporal", "inferior_temporal", "superior_parietal", "motor", "somatosensory",
)

_ANCHOR_PRESETS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("broca", ("G_front_inf-Opercular", "G_front_inf-Triangul"), "left",
     "Broca's area: inferior frontal gyrus, pars opercularis + pars triangularis (left)"),
    ("wernicke", ("G_temp_sup-Plan_tempo",), "left",
     "Wernicke's area as the planum temporale, the posterior superior temporal plane (left)"),
    ("auditory", ("G_temp_sup-G_T_transv", "S_temporal_transverse"), "both",
     "Primary auditory cortex: Heschl's (transverse temporal) gyrus and sulcus"),
    ("sts", ("S_temporal_sup",), "both",
     "Superior temporal sulcus, both banks and its posterior ascending branch"),
    ("angular", ("G_pariet_inf-Angular",), "left", "Angular gyrus (left inferior parietal lobule)"),
    ("supramarginal", ("G_pariet_inf-Supramar",), "left", "Supramarginal gyrus (left inferior parietal lobule)"),
    ("default_mode", ("G_cingul-Post-dorsal", "G_cingul-Post-ventral", "G_precuneus"), "both",
     "Posterior midline core of the default-mode network: posterior cingulate + precuneus "
     "(not the whole network)"),
    ("anterior_cingulate", ("G_and_S_cingul-Ant", "G_and_S_cingul-Mid-Ant"), "both",
     "Anterior cingulate (pregenual) + anterior midcingulate cortex"),
    ("dlpfc", ("G_front_middle", "S_front_middle"), "both",
     "Dorsolateral prefrontal cortex: middle frontal gyrus and sulcus"),
    ("superior_frontal", ("G_front_sup", "S_front_sup"), "both",
     "Superior frontal gyrus (lateral and medial parts) and sulcus"),
    ("v1", ("S_calcarine",), "both",
     "Calcarine sulcus, the core of primary visual cortex (V1 also reaches the occipital pole)"),
    ("lateral_occipital", ("G_occipital_middle", "G_occipital_sup", "S_oc_middle_and_Lunatus",
                           "G_and_S_occipital_inf"), "both",
     "Lateral occipital cortex: superior, middle and inferior occipital gyri"),
    ("fusiform", ("G_oc-temp_lat-fusifor",), "both", "Fusiform gyrus (includes the visual word-form area region)"),
    ("parahippocampal", ("G_oc-temp_med-Parahip",), "both", "Parahippocampal gyrus"),
    ("insula", ("G_insular_short", "G_Ins_lg_and_S_cent_ins"), "both",
     "Insula: short gyri, long gyrus and central insular sulcus"),
    ("middle_temporal", ("G_temporal_middle", "S_temporal_inf"), "both",
     "Middle temporal gyrus and the inferior temporal sulcus below it"),
    ("inferior_temporal", ("G_temporal_inf",), "both", "Inferior temporal gyrus"),
    ("superior_parietal", ("G_parietal_sup", "S_intrapariet_and_P_trans"), "both",
     "Superior parietal lobule and the intraparietal sulcus"),
    ("motor", ("G_precentral", "S_precentral-inf-part", "S_precentral-sup-part"), "both",
     "Precentral gyrus and sulcus (M1's crown plus premotor strip; M1's main bank lies in S_central, "
     "which is in 'somatosensory')"),
    ("somatosensory", ("G_postcentral", "S_postcentral", "S_central"), "both",
     "Postcentral gyrus and sulcus plus the central sulcus (S_central's anterior bank is M1)"),
)

# The anchor repo's own definitions where ours differ, kept so its numbers can be reproduced.
ANCHOR_ORIGINALS: dict[str, tuple[tuple[str, ...], str]] = {
    "wernicke": (("G_temp_sup-Lateral", "S_temporal_sup"), "left"),
    "sts": (("Lat_Fis-post", "G_temp_sup-Plan_tempo"), "both"),
    "lateral_occipital": (("G_occipital_middle", "G_occipital_sup", "S_oc_middle_and_Lunatus"), "both"),
}

# Left-lateralised language regions that also get right-hemisphere and bilateral variants.
_LATERAL_VARIANTS = ("broca", "wernicke", "angular", "supramarginal")


def _build_presets() -> dict[str, ROI]:
    cortex = destrieux_label_names()
    presets: dict[str, ROI] = {}

    def add(roi: ROI) -> None:
        presets[roi.name] = roi

    for name, labels, hemisphere, description in _ANCHOR_PRESETS:
        add(ROI(name, labels, hemisphere, description))
    for name in _LATERAL_VARIANTS:
        base = presets[name]
        core = base.description.replace(" (left)", "").replace("(left ", "(")
        add(ROI(f"{name}_right", base.labels, "right", f"{core}, right-hemisphere homologue"))
        add(ROI(f"{name}_bilateral", base.labels, "both", f"{core}, both hemispheres"))
    for name, (labels, hemisphere) in ANCHOR_ORIGINALS.items():
        add(ROI(f"anchor_{name}", labels, hemisphere,
                f"The anchor repo's '{name}' exactly as it defined it; kept only to reproduce its numbers"))
    add(ROI("stg", ("G_temp_sup-Lateral",), "both", "Lateral superior temporal gyrus, anterior to posterior"))
    add(ROI("language_left",
            ("G_front_inf-Opercular", "G_front_inf-Triangul", "G_front_inf-Orbital", "G_temp_sup-Lateral",
             "G_temp_sup-Plan_tempo", "S_temporal_sup", "G_temporal_middle"), "left",
            "Anatomical footprint of the left fronto-temporal language network (IFG, STG, STS, MTG); "
            "an approximation of functionally defined language regions"))
    add(ROI("global", cortex, "both", "All cortex, medial wall excluded (the reference for selectivity)"))
    add(ROI("left_hemisphere", cortex, "left", "Left-hemisphere cortex, medial wall excluded"))
    add(ROI("right_hemisphere", cortex, "right", "Right-hemisphere cortex, medial wall excluded"))
    add(ROI("all_vertices", cortex + ("Medial_wall",), "both",
            "All 20,484 vertices including the medial wall (the anchor's 'global' mean)"))
    return presets


@functools.lru_cache(maxsize=1)
def _presets() -> dict[str, ROI]:
    return _build_presets()


def list_rois() -> list[str]:
    """Names of the registered ROIs (presets plus any added with ``register_roi``), sorted."""
    return sorted(_presets())


def register_roi(roi: ROI, *, overwrite: bool = False) -> ROI:
    """Make ``roi`` available by name to ``get_roi``, recipes and the CLI."""
    if not isinstance(roi, ROI):
        raise TypeError(f"register_roi takes an ROI, got {type(roi).__name__}; build one with ROI.from_labels.")
    if not _NAME_PATTERN.match(roi.name):
        raise ValueError(
            f"ROI name {roi.name!r} cannot be registered: use letters, digits, '_', '.', '-' and start with a letter."
        )
    presets = _presets()
    if roi.name in presets and not overwrite:
        raise ValueError(f"ROI {roi.name!r} is already registered; pass overwrite=True to replace it.")
    presets[roi.name] = roi
    return roi


def get_roi(roi: "ROI | str") -> ROI:
    """An ROI from an ``ROI`` (returned as is), a registered name or a spec string (see ``parse_roi_spec``)."""
    if isinstance(roi, ROI):
        return roi
    if not isinstance(roi, str):
        raise TypeError(f"Expected an ROI or a name/spec string, got {type(roi).__name__}. {SPEC_HELP}")
    key = roi.strip()
    presets = _presets()
    if key in presets:
        return presets[key]
    if ":" in key:
        return parse_roi_spec(key)
    raise unknown_name_error("ROI", key, list(presets), hint=SPEC_HELP)


_SPEC_PATTERN = re.compile(r"^(?:(?P<name>[A-Za-z][A-Za-z0-9_.-]*)=)?(?P<kind>labels|mask):(?P<body>.*)$", re.S)


def parse_roi_spec(spec: str) -> ROI:
    """Parse a compact ROI string for CLIs and recipes.

    - ``labels:G_front_inf-Opercular,G_front_inf-Triangul@left`` (hemisphere defaults to ``both``);
    - ``mask:path/to/roi.npy`` or ``mask:roi.txt``;
    - either may start with ``NAME=`` to name the region (otherwise the spec or file stem is its name).
    """
    match = _SPEC_PATTERN.match(spec.strip())
    if not match:
        raise ValueError(f"Cannot parse ROI spec {spec!r}. {SPEC_HELP}")
    name, kind, body = match.group("name"), match.group("kind"), match.group("body").strip()
    if kind == "mask":
        if not body:
            raise ValueError(f"ROI spec {spec!r} names no mask file.")
        return ROI.from_mask_file(body, name=name)
    labels_part, _, hemisphere = body.partition("@")
    labels = tuple(label.strip() for label in labels_part.split(",") if label.strip())
    if not labels:
        raise ValueError(f"ROI spec {spec!r} lists no labels. {SPEC_HELP}")
    hemisphere = normalize_hemisphere(hemisphere.strip() or "both")
    return ROI.from_labels(name or f"labels:{','.join(labels)}@{hemisphere}", labels, hemisphere)


def resolve_mask(roi: Any) -> np.ndarray:
    """A boolean (20,484,) mask from an ROI, a name/spec string or a boolean mask array."""
    if isinstance(roi, (ROI, str)):
        return get_roi(roi).mask()
    mask = np.asarray(roi)
    if mask.dtype != bool:
        raise TypeError(
            f"Expected an ROI, a preset name or a boolean ({N_VERTICES},) mask, got a {mask.dtype} array; "
            "wrap vertex indices as ROI(name, vertices=...)."
        )
    if mask.shape != (N_VERTICES,):
        raise ValueError(f"A mask must have shape ({N_VERTICES},) (fsaverage5, left first), got {mask.shape}.")
    if not mask.any():
        raise ValueError("The mask selects no vertices; a mean over an empty region is undefined.")
    return mask


def describe_rois(names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One row per ROI (name, hemisphere, vertex count, labels, description) for listings and docs."""
    rows = []
    for name in names if names is not None else list_rois():
        roi = get_roi(name)
        rows.append({
            "name": roi.name, "hemisphere": roi.hemisphere, "n_vertices": roi.n_vertices,
            "labels": list(roi.labels), "description": roi.description,
        })
    return rows

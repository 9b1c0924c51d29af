"""`brainrl rois list|show` (the ROI registry) and `brainrl plot` (maps and ROIs on the inflated cortex)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from brainrl.cli.common import file_arg


def register(subparsers) -> None:
    p = subparsers.add_parser("rois", help="list or show ROI presets, list the Destrieux labels")
    sub = p.add_subparsers(dest="rois_command", metavar="{list,show,labels}")
    lst = sub.add_parser("list", help="list the named ROI presets")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=run_list)
    show = sub.add_parser("show", help="show one ROI: labels, hemisphere, vertex count")
    show.add_argument("roi", help="preset name or spec, e.g. broca or 'labels:G_front_inf-Opercular@left'")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=run_show)
    labels = sub.add_parser("labels", help="all Destrieux labels (names for ROI.from_labels and labels: specs)")
    labels.add_argument("--json", action="store_true")
    labels.set_defaults(func=run_labels)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    plot = subparsers.add_parser("plot", help="plot a map (.npy) or an ROI on the inflated fsaverage5 surface")
    what = plot.add_mutually_exclusive_group(required=True)
    what.add_argument("--map", help=".npy of shape (20484,) or (T, 20484); (T, V) is averaged over time")
    what.add_argument("--roi", help="ROI preset name or spec")
    plot.add_argument("--out", required=True, type=file_arg, help="output PNG path")
    plot.add_argument("--title", default=None, help="figure title (default: what the map is, from predictions.json)")
    plot.add_argument("--symmetric", action="store_true", help="diverging colour map centred on 0")
    plot.add_argument("--frame", type=int, default=None, help="plot one frame of a (T, V) map instead of the mean")
    plot.set_defaults(func=run_plot)


def run_list(args: argparse.Namespace) -> int:
    from brainrl.cortex.rois import describe_rois

    rows = describe_rois()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} ROI presets (Destrieux, fsaverage5)")
    for column in ("name", "hemisphere", "vertices", "labels"):
        table.add_column(column)
    for row in rows:
        labels = row["labels"]
        shown = ", ".join(labels) if len(labels) <= 6 else f"{len(labels)} labels ({row['description']})"
        table.add_row(row["name"], row["hemisphere"], str(row["n_vertices"]), shown)
    Console(width=160).print(table)
    return 0


def run_show(args: argparse.Namespace) -> int:
    from brainrl.cortex.rois import get_roi

    roi = get_roi(args.roi)
    row = {"name": roi.name, "hemisphere": roi.hemisphere, "n_vertices": roi.n_vertices,
           "labels": list(roi.labels), "description": roi.description, "spec": roi.spec()}
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        for key, value in row.items():
            print(f"{key:>11}: {', '.join(value) if isinstance(value, list) else value}")
    return 0


def run_labels(args: argparse.Namespace) -> int:
    from brainrl.cortex.atlas import load_destrieux

    atlas = load_destrieux()
    rows = []
    for index, name in enumerate(atlas.names):
        counts = {hemi: int((getattr(atlas, hemi) == index).sum()) for hemi in ("left", "right")}
        rows.append({"index": index, "name": name, "left_vertices": counts["left"], "right_vertices": counts["right"]})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} Destrieux labels (aparc.a2009s) on fsaverage5; use them in "
                        "ROI.from_labels(...) or 'labels:NAME,NAME@left'")
    for column in ("index", "label", "left vertices", "right vertices"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["index"]), row["name"], str(row["left_vertices"]), str(row["right_vertices"]))
    Console(width=120).print(table)
    return 0


def _map_title(path: Path, frames: int, frame: int | None) -> str:
    """What a predicted map is: model, frame or mean of frames, and the text (from predictions.json)."""
    what = f"frame {frame} of {frames}" if frame is not None else (f"mean of {frames} frames" if frames > 1 else "1 frame")
    index_file = path.parent / "predictions.json"
    if index_file.exists():
        try:
            index = json.loads(index_file.read_text(encoding="utf-8"))
            item = next(e for e in index.get("items", []) if e.get("file") == path.name)
            model = item.get("provenance", {}).get("model", "brain model")
            text = item["text"] if len(item["text"]) <= 60 else item["text"][:57] + "…"
            return f"Predicted response ({model}, {what}):\n“{text}”"
        except (ValueError, StopIteration, KeyError, TypeError):
            pass
    return f"Predicted response ({what}): {path.name}"


def run_plot(args: argparse.Namespace) -> int:
    import numpy as np

    from brainrl.cortex.plot import plot_roi, plot_surface

    if args.roi:
        out = plot_roi(args.roi, args.out, title=args.title)
    else:
        path = Path(args.map)
        if not path.exists():
            raise FileNotFoundError(f"Map file {args.map!r} not found (expected a .npy written by `brainrl predict`).")
        data = np.load(path)
        frames = data.shape[0] if data.ndim == 2 else 1
        if args.frame is not None and not (data.ndim == 2 and -frames <= args.frame < frames):
            raise ValueError(f"--frame {args.frame} is out of range: {path.name} has {frames} frame(s) "
                             f"(valid: 0 to {frames - 1}); omit --frame to plot the mean over frames.")
        if data.ndim == 2:
            data = data[args.frame] if args.frame is not None else data.mean(axis=0)
        frame = None if args.frame is None else args.frame % frames
        out = plot_surface(data, args.out, title=args.title or _map_title(path, frames, frame), symmetric=args.symmetric)
    print(f"wrote {out}")
    return 0

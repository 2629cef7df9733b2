"""Backbone leaderboard: paper Tab. 4 / Tab-A2 / Fig. 3 and the sweeps of Fig. 6, Tab-A3, Tab-A5.

One awareness run per backbone and setting over the same scenes; one table (``leaderboard.csv``,
``.json``, ``.md``) with the mean and std of the correspondence score over scenes, the parameter count
and the seconds per scene, and a bar chart. With a NOS table (``model,group,<metrics>`` CSV, see
``vega3d nos``) the backbones found in it are correlated with their NOS and drawn as in Fig. 3b.

Sweeps reuse the loaded model (``Backbone.set_options``): ``timesteps`` gives one row per timestep,
``layers`` one row per layer (``layer`` or ``block``, whichever the backbone has), each with the other
options at their defaults, as the paper varies one at a time. Each setting's awareness report goes to
its own sub-folder; a finished setting is reused when the run is repeated with the same configuration.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vega3d.analysis.awareness import run_awareness  # noqa: E402
from vega3d.analysis.nos import NosTable, correlation  # noqa: E402
from vega3d.analysis.plots import plot_correspondence_vs_nos  # noqa: E402
from vega3d.backbones import Backbone, BackboneUnavailable, backbone_description, load_backbone  # noqa: E402
from vega3d.io import atomic_path, write_json, write_text  # noqa: E402
from vega3d.scenes import DEFAULT_IMAGE_SIZE, PreparedScenes  # noqa: E402

#: Registry name -> model name in the paper's Tab. 4 (and the bundled ``paper_tab4.csv``).
PAPER_NAMES = {
    "vjepa2-vitg16": "V-JEPA v2", "dinov3-vitl16": "DINOv3-Large", "vggt": "VGGT", "svd": "Stable Video Diffusion",
    "sd2.1": "Stable Diffusion 2.1", "vmem": "Vmem", "seva": "SEVA", "sd-vae": "VAE",
    "wan2.1-vace-1.3b": "Wan2.1-VACE", "wan2.1-t2v-1.3b": "Wan2.1-T2V",
}
COLUMNS = ["backbone", "weights", "setting", "correspondence_mean", "correspondence_std", "num_scored", "num_scenes",
           "num_parameters", "seconds_per_scene", "load_seconds", "report"]
LAYER_OPTIONS = ("layer", "block")


@dataclass
class BackboneRequest:
    """One backbone to rank: its registry name, weights and load options."""

    name: str
    weights: str | None = None
    options: dict = field(default_factory=dict)


def sweep_settings(backbone: Backbone, timesteps: Sequence[int] = (), layers: Sequence[int] = ()) -> list[dict]:
    """The settings to run: ``[{}]`` (defaults) unless the backbone can sweep what was asked."""
    settings = [{"timestep": t} for t in timesteps] if "timestep" in backbone.sweep_options else []
    layer_option = next((o for o in LAYER_OPTIONS if o in backbone.sweep_options), None)
    if layer_option:
        settings += [{layer_option: layer} for layer in layers]
    return settings or [{}]


def setting_label(setting: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in setting.items()) or "default"


@dataclass
class Leaderboard:
    rows: list[dict]
    options: dict
    nos: dict | None = None

    def csv_text(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        return buffer.getvalue()

    def markdown(self) -> str:
        settings = ", ".join(f"{k} {v}" for k, v in self.options["awareness"].items())
        lines = ["# Backbone leaderboard: multi-view correspondence score", "",
                 f"- {len(self.options['scenes'])} scene(s); {settings or 'default awareness options'}", "",
                 "| backbone | weights | setting | correspondence (mean ± std) | scenes | parameters | s / scene |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            score = f"{r['correspondence_mean']:.4f} ± {r['correspondence_std']:.4f}" if math.isfinite(r["correspondence_mean"]) else "n/a"
            lines.append(f"| {r['backbone']} | {r['weights']} | {r['setting']} | {score} | {r['num_scored']}/{r['num_scenes']} "
                         f"| {r['num_parameters']:,} | {r['seconds_per_scene']:.2f} |")
        notes = [f"- {r['backbone']}: {r['note']}" for r in self.rows if r.get("note")]
        if notes:
            lines += ["", "## Notes", "", *notes]
        if self.nos:
            lines += ["", "## Correspondence vs NOS", "", f"- NOS table: {self.nos['table']}"]
            lines += [f"- {b} = {m}: correspondence {c:.2f} %, NOS {n:.2f} %" for b, (m, c, n) in self.nos["points"].items()]
            corr = self.nos.get("correlation")
            lines.append(f"- Pearson r = {corr['pearson']:.3f} (p = {corr['pearson_p']:.3g}), Spearman rho = "
                         f"{corr['spearman']:.3f} over {corr['n']} backbones" if corr else f"- correlation: {self.nos['note']}")
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        out = Path(out_dir)
        files = {"csv": write_text(out / "leaderboard.csv", self.csv_text()),
                 "json": write_json(out / "leaderboard.json", {"options": self.options, "rows": self.rows, "nos": self.nos}),
                 "markdown": write_text(out / "leaderboard.md", self.markdown())}
        if any(math.isfinite(r["correspondence_mean"]) for r in self.rows):
            files["chart"] = plot_leaderboard(self.rows, out / "leaderboard.png")
        return files


def plot_leaderboard(rows: Sequence[dict], path: str | Path) -> Path:
    """Horizontal bars: mean correspondence score per backbone and setting, std as error bars."""
    rows = [r for r in rows if math.isfinite(r["correspondence_mean"])]
    labels = [f"{r['backbone']} {r['setting'] if r['setting'] != 'default' else ''}".strip()
              + (" (RANDOM WEIGHTS)" if r["weights"].startswith("RANDOM WEIGHTS") else "") for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(rows) + 1.2))
    ax.barh(range(len(rows)), [r["correspondence_mean"] for r in rows], xerr=[r["correspondence_std"] for r in rows],
            color="tab:blue", capsize=3)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("multi-view correspondence score (mean ± std over scenes)")
    ax.set_title("Backbone leaderboard", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


def _table_model(backbone: str, models: Sequence[str]) -> str | None:
    """The NOS-table row of ``backbone``: its own name or its paper name, case-insensitive."""
    wanted = {backbone.lower(), PAPER_NAMES.get(backbone, backbone).lower()}
    return next((m for m in models if m.lower() in wanted), None)


def compare_with_nos(rows: Sequence[dict], table: NosTable, table_path: str | Path, baseline: str,
                     out_dir: str | Path) -> dict:
    """Correlate the backbones' correspondence (default settings) with their NOS; draw Fig. 3b."""
    nos = {}
    for scores in table.nos_by_group(baseline).values():
        nos.update({model: value for model, value in scores.items() if model != baseline})
    points = {}
    for row in rows:
        model = _table_model(row["backbone"], list(nos))
        if row["setting"] == "default" and model and math.isfinite(row["correspondence_mean"]):
            points[row["backbone"]] = (model, 100.0 * row["correspondence_mean"], nos[model])
    result = {"table": str(table_path), "baseline": baseline, "points": points}
    if len(points) >= 3:
        result["correlation"] = correlation([c for _, c, _ in points.values()], [n for _, _, n in points.values()]).to_dict()
    else:
        result["note"] = f"needs at least 3 backbones found in the NOS table; found {len(points)}"
    if points:
        corr = result.get("correlation")
        title = "Correspondence (measured) vs NOS" + (f": Pearson {corr['pearson']:.2f}, Spearman {corr['spearman']:.2f}" if corr else "")
        result["plot"] = str(plot_correspondence_vs_nos({b: c for b, (_, c, _) in points.items()},
                                                        {b: n for b, (_, _, n) in points.items()},
                                                        Path(out_dir) / "correspondence_vs_nos.png", title,
                                                        groups={b: table.groups.get(m, "") for b, (m, _, _) in points.items()}))
    return result


def _json_roundtrip(value):
    return json.loads(json.dumps(value, default=str))


def _recorded(awareness: dict) -> dict:
    """The awareness options as recorded (JSON); a function such as ``encode`` changes no result and is left out."""
    return _json_roundtrip({k: v for k, v in awareness.items() if not callable(v)})


def _run_setting(backbone: Backbone, scene_paths, out: Path, awareness: dict, progress: bool, prepared) -> dict:
    """Awareness report of the backbone as it is set now; reused when ``out`` holds one of the same configuration."""
    key = _json_roundtrip({"backbone": backbone.config(), "scenes": [str(p) for p in scene_paths],
                           "awareness": _recorded(awareness)})
    done = out / "leaderboard_row.json"
    if done.is_file():
        try:
            saved = json.loads(done.read_text())
        except ValueError as error:  # written atomically, so only damaged from outside: say so and recompute
            warnings.warn(f"{done}: broken ({error}); computing this row again", stacklevel=2)
            saved = {}
        if saved.get("key") == key:  # NaN is stored as null (strict JSON)
            return {name: math.nan if value is None else value for name, value in saved["row"].items()}
    report = run_awareness(scene_paths, backbone, out_dir=out, progress=progress, prepared=prepared, **awareness)
    stats = report.statistics()
    row = {"correspondence_mean": stats["mean"], "correspondence_std": stats["std"], "num_scored": stats["num_scored"],
           "num_scenes": stats["num_scenes"], "seconds_per_scene": stats["seconds_per_scene"]}
    write_json(done, {"key": key, "row": row})
    return row


def run_leaderboard(scene_paths: Sequence[str | Path], requests: Sequence[BackboneRequest], out_dir: str | Path,
                    timesteps: Sequence[int] = (), layers: Sequence[int] = (), nos_table: str | Path | None = None,
                    baseline: str = "Baseline", progress: bool = True, **awareness) -> Leaderboard:
    """Rank ``requests`` on ``scene_paths``; ``awareness`` goes to :func:`run_awareness` (num_frames, voxel_size...)."""
    from vega3d.analysis.nos import read_nos_table

    # Bad names and tables fail before any model runs.
    for request in requests:
        backbone_description(request.name)  # KeyError naming the unknown backbone and the known ones
    table = read_nos_table(nos_table) if nos_table is not None else None
    out = Path(out_dir)
    rows = []
    prepared = awareness.pop("prepared", None) or PreparedScenes(awareness.get("num_frames", 32),
                                                                 awareness.get("image_size", DEFAULT_IMAGE_SIZE))  # each scene read once
    for request in requests:
        base = {"backbone": request.name, "report": ""}
        start = time.perf_counter()
        try:
            backbone = load_backbone(request.name, weights=request.weights, **request.options)
        except TypeError as error:  # an option this backbone does not take
            raise ValueError(f"backbone {request.name!r}: {error}; give backbone-specific options as NAME:KEY=VALUE") from None
        except BackboneUnavailable as error:
            rows.append({**base, "weights": "NOT AVAILABLE", "setting": "default", "correspondence_mean": math.nan,
                         "correspondence_std": math.nan, "num_scored": 0, "num_scenes": len(scene_paths),
                         "num_parameters": 0, "seconds_per_scene": math.nan, "load_seconds": 0.0, "note": str(error)})
            continue
        load_seconds = time.perf_counter() - start
        defaults = {option: getattr(backbone, option) for option in ("timestep", *LAYER_OPTIONS) if option in backbone.sweep_options}
        for setting in sweep_settings(backbone, timesteps, layers):
            backbone.set_options(**{**defaults, **setting})
            folder = request.name + "".join(f"_{k}{v}" for k, v in setting.items())
            row = _run_setting(backbone, scene_paths, out / folder, awareness, progress, prepared)
            rows.append({**base, "weights": backbone.weights_label, "setting": setting_label(setting), **row,
                         "num_parameters": backbone.num_parameters, "load_seconds": round(load_seconds, 3), "report": folder})
        if (timesteps or layers) and not (set(backbone.sweep_options) & {"timestep", *LAYER_OPTIONS}):
            rows[-1]["note"] = "has no timestep/layer option: one row with its defaults"
        del backbone
        gc.collect()
    options = {"scenes": [str(p) for p in scene_paths], "awareness": _recorded(awareness),
               "timesteps": list(timesteps), "layers": list(layers)}
    board = Leaderboard(rows, options)
    if table is not None:
        board.nos = compare_with_nos(rows, table, nos_table, baseline, out)
    board.write(out)
    return board


def parse_int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ValueError(f"{flag} expects comma-separated integers such as 0,100,300; got {text!r}") from None


def parse_requests(backbones: str, weights: str | None = None, options: Sequence[str] = ()) -> list[BackboneRequest]:
    """``--backbone a,b``; ``--weights PATH`` (one backbone) or ``a=PATH,b=PATH``; ``--option [NAME:]KEY=VALUE``."""
    names = [n.strip() for n in backbones.split(",") if n.strip()]
    if not names:
        raise ValueError("--backbone is empty")
    requests = {name: BackboneRequest(name) for name in names}
    if weights:
        pairs = [item.partition("=") for item in weights.split(",")] if len(names) > 1 else [(names[0], "=", weights)]
        for name, sep, path in pairs:
            if not sep or name not in requests:
                raise ValueError(f"--weights with several backbones takes NAME=PATH entries for names in --backbone; got {weights!r}")
            requests[name].weights = path
    for item in options:
        target, colon, assignment = item.partition(":") if ":" in item.partition("=")[0] else ("", "", item)
        key, sep, value = assignment.partition("=")
        if not sep or not key or (colon and target not in requests):
            raise ValueError(f"--option {item!r}: expected [BACKBONE:]KEY=VALUE with BACKBONE in --backbone")
        for request in ([requests[target]] if colon else requests.values()):
            request.options[key.replace("-", "_")] = _parse_value(value)
    return list(requests.values())


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text



def run_from_args(args, scene_paths: Sequence[Path], **awareness) -> int:
    """``vega3d awareness`` with several backbones, ``--timesteps``, ``--layers`` or ``--nos``;
    ``awareness`` (e.g. ``encode`` reading a feature store) goes on to :func:`run_awareness`."""
    requests = parse_requests(args.backbone, args.weights, args.option)
    if args.grid:
        for request in requests:
            request.options.setdefault("grid", args.grid)
    board = run_leaderboard(scene_paths, requests, args.out, timesteps=parse_int_list(args.timesteps or "", "--timesteps"),
                            layers=parse_int_list(args.layers or "", "--layers"), nos_table=args.nos, baseline=args.baseline,
                            num_frames=args.frames, image_size=args.image_size, voxel_size=args.voxel_size,
                            protocol=args.protocol, min_valid_depth=args.min_valid_depth, plot_scenes=args.plots,
                            **awareness)
    for row in board.rows:
        score = f"{row['correspondence_mean']:.4f} ± {row['correspondence_std']:.4f}" if math.isfinite(row["correspondence_mean"]) else "n/a"
        print(f"{row['backbone']:20s} {row['setting']:14s} {score:18s} {row['num_parameters']:>14,} params "
              f"{row['seconds_per_scene']:7.2f} s/scene  [{row['weights']}]")
    if board.nos and board.nos.get("correlation"):
        corr = board.nos["correlation"]
        print(f"correlation with NOS over {corr['n']} backbones: Pearson r = {corr['pearson']:.3f}, Spearman rho = {corr['spearman']:.3f}")
    elif board.nos:
        print(f"correlation with NOS: {board.nos['note']}")
    print(f"leaderboard: {Path(args.out) / 'leaderboard.md'}")
    return 0

"""``vega3d nos``: Normalized Overall Score per group, and its correlation with correspondence scores."""

from __future__ import annotations

from pathlib import Path

from importlib.resources import files


def register(subparsers) -> None:
    p = subparsers.add_parser("nos", help="Normalized Overall Score (App. C.2) and correlation with correspondence",
                              description=__doc__)
    p.add_argument("table", nargs="?", type=Path,
                   help="CSV with columns model,group,<metrics...>[,correspondence] (default: the paper's Tab. 4 + Tab-A2)")
    p.add_argument("--baseline", default="Baseline", help="name of the baseline row (default: Baseline)")
    p.add_argument("--out", type=Path, default=Path("outputs/nos"), help="output folder for nos.json and the scatter plot")
    p.set_defaults(func=run)


def paper_table() -> Path:
    return Path(str(files("vega3d") / "data" / "paper_tab4.csv"))


def run(args) -> int:
    from vega3d.analysis import correlation, read_nos_table
    from vega3d.analysis.plots import plot_correspondence_vs_nos
    from vega3d.io import write_json

    from vega3d.cli import check_outputs

    check_outputs({"--out": args.out}, [args.table], folders=("--out",))
    path = args.table or paper_table()
    table = read_nos_table(path)
    by_group = table.nos_by_group(args.baseline)
    nos = {}
    print(f"NOS (%) from {path}" + (" (the paper's Tab. 4)" if args.table is None else ""))
    for group, scores in by_group.items():
        print(f"  group {group or '(all)'}:")
        for name, value in scores.items():
            print(f"    {name:28s} {value:6.2f}")
            if name != args.baseline:
                nos[name] = value
    result = {"table": str(path), "baseline": args.baseline, "nos": by_group}
    scored = [n for n in nos if table.correspondence[n] == table.correspondence[n]]
    if len(scored) >= 3:
        corr = correlation([table.correspondence[n] for n in scored], [nos[n] for n in scored])
        print(f"correlation with correspondence over {corr.n} models: Pearson r = {corr.pearson:.3f} "
              f"(p = {corr.pearson_p:.3g}), Spearman rho = {corr.spearman:.3f} (p = {corr.spearman_p:.3g})")
        plot = plot_correspondence_vs_nos(table.correspondence, {n: nos[n] for n in scored}, args.out / "correspondence_vs_nos.png",
                                          f"Correspondence vs NOS (Pearson {corr.pearson:.2f}, Spearman {corr.spearman:.2f})",
                                          groups=table.groups)
        result["correlation"] = corr.to_dict()
        print(f"plot: {plot}")
    write_json(args.out / "nos.json", result)
    print(f"written: {args.out / 'nos.json'}")
    return 0

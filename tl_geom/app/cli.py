"""Command line: ``tl-geom SUBCOMMAND`` (also ``python -m tl_geom``).

User errors (a TlGeomError: missing corpus, bad N, model not available offline) print
one line on stderr and exit with code 2, without a traceback.
"""

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tl_geom import __version__
from tl_geom.errors import TlGeomError
from tl_geom.jobs.config import BACKENDS, BASELINE_SCORES, DTYPES, AnalyzeConfig, SparsifyConfig

if TYPE_CHECKING:
    from tl_geom.geometry.taxonomy import TaxonomyConfig

__all__ = ["main"]

TAXONOMY_HELP = (
    "head-type rule thresholds, e.g. retriever_min=0.6,weak_max=0.25 (keys: retriever_min, "
    "retriever_share, shift_min, sink_min, weak_max, early_n, late_frac, cross_frac, seed, "
    "restarts; see tl_geom.geometry.taxonomy.TaxonomyConfig)"
)


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        msg = f"expected comma-separated numbers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _source_args(p: argparse.ArgumentParser, windows: int, ctx: int, what: str) -> None:
    """``--model --corpus --windows --ctx``, shared by the subcommands that cut windows."""
    p.add_argument("--model", default=AnalyzeConfig.model, help="shipped name, local dir or hub id")
    p.add_argument("--corpus", default=AnalyzeConfig.corpus, help="shipped corpus or a UTF-8 file")
    p.add_argument("--windows", type=int, default=windows, help=what)
    p.add_argument("--ctx", type=int, default=ctx, help="tokens per window L")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tl-geom",
        description="Geometry of attention heads, from the command line.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # `--window 3` is an error, not --windows
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser(
        "analyze",
        help="per-head geometry over corpus windows: metrics.csv, heads.csv, report.html",
    )
    _source_args(a, AnalyzeConfig.windows, AnalyzeConfig.ctx, "number of windows")
    a.add_argument("--n", type=_int_list, default=None, help="N grid; None: 1,2,4,...,L/2")
    a.add_argument("--queries", choices=["last", "all"], default=AnalyzeConfig.queries)
    a.add_argument(
        "--draws",
        type=int,
        default=AnalyzeConfig.draws,
        help="random subsets per row (0: no random baseline)",
    )
    a.add_argument("--seed", type=int, default=AnalyzeConfig.seed, help="seed of the baseline")
    a.add_argument("--layers", type=_int_list, default=None, help="layers; None: all")
    a.add_argument("--out", default="tl_geom_out", help="output directory")
    a.add_argument("--resume", action="store_true", help="continue a run in --out")
    a.add_argument(
        "--strict",
        action="store_true",
        help="refuse a bad window file in --out instead of moving it aside and recomputing",
    )
    a.add_argument("--no-report", action="store_true", help="skip report.html")
    a.add_argument(
        "--backend",
        choices=BACKENDS,
        default=AnalyzeConfig.backend,
        help="auto: sdpa where the model allows it; hooks: TransformerLens hook "
        "points (eager attention); sdpa: fused attention, only the needed rows recomputed",
    )
    a.add_argument("--device", default=None, help="cpu or cuda; None: cpu")
    a.add_argument(
        "--compile",
        action="store_true",
        help="compile the random baseline's counting passes (torch.compile: ~30 s once, "
        "same results, eager fallback)",
    )
    a.add_argument(
        "--baseline-scores",
        choices=BASELINE_SCORES,
        default=AnalyzeConfig.baseline_scores,
        help="dtype of the random baseline's scores: auto (float32 on a GPU, float64 on "
        "the CPU), float64 or float32 (certified: the same counts)",
    )
    a.add_argument(
        "--dtype",
        choices=DTYPES,
        default=AnalyzeConfig.dtype,
        help="model dtype (float64: the backends agree most closely)",
    )
    a.add_argument("--taxonomy", default=None, help=TAXONOMY_HELP)
    p = sub.add_parser(
        "sparsify",
        help="remove heads by type/metric rules; held-out loss: sparsify.csv, sparsify_report.html",
    )
    _source_args(p, SparsifyConfig.windows, SparsifyConfig.ctx, "scoring windows")
    p.add_argument("--heldout", type=int, default=SparsifyConfig.heldout, help="held-out windows")
    p.add_argument("--seeds", type=int, default=SparsifyConfig.seeds, help="random-rule seeds")
    p.add_argument(
        "--fractions",
        type=_float_list,
        default=SparsifyConfig.fractions,
        help="fractions of heads removed, e.g. 0,0.1,0.5",
    )
    p.add_argument("--ablation", default="zero,mean", help="zero and/or mean")
    p.add_argument("--taxonomy", default=None, help=TAXONOMY_HELP)
    p.add_argument("--out", default="tl_geom_sparsify", help="output directory")
    p.add_argument("--no-report", action="store_true", help="skip sparsify_report.html")
    s = sub.add_parser(
        "summary",
        help="per-layer sink mass, entropy and top-N separability of the final query",
    )
    _source_args(s, 2, 256, "number of windows")
    s.add_argument("--n", type=_int_list, default=[1, 4, 16], help="N values, e.g. 1,4,16")
    h = sub.add_parser(
        "headnorm",
        help="train a baseline and a HeadNorm tiny model on a corpus; compare sinks, rank, loss",
    )
    h.add_argument("--corpus", default="war_and_peace", help="shipped corpus or a UTF-8 file")
    h.add_argument("--steps", type=int, default=300, help="training steps per arm")
    h.add_argument("--batch", type=int, default=32, help="windows per step")
    h.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate")
    h.add_argument("--seed", type=int, default=0, help="seed of init and batches")
    h.add_argument("--layers", type=int, default=4, help="layers")
    h.add_argument("--heads", type=int, default=4, help="heads per layer")
    h.add_argument("--d-head", type=int, default=16, help="head dimension")
    h.add_argument("--n-ctx", type=int, default=64, help="tokens per window")
    h.add_argument("--val-windows", type=int, default=32, help="held-out windows")
    h.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    h.add_argument(
        "--log-every", type=int, default=0, help="steps between sink-rate logs (0: none)"
    )
    h.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's)")
    h.add_argument("--out", default=None, help="directory for headnorm_*.csv (optional)")
    r = sub.add_parser(
        "reproduce",
        help="run the papers' experiments, judge each claim: claims.csv, claims.html",
    )
    r.add_argument("--quick", action="store_true", help="a few minutes on 2 cores (small sizes)")
    r.add_argument(
        "--models",
        default="smollm2-135m,minilm-l6",
        help="comma-separated model names or paths",
    )
    r.add_argument("--corpus", default="war_and_peace", help="shipped corpus or a UTF-8 file")
    r.add_argument("--no-headnorm", action="store_true", help="skip the TinyLM HeadNorm study")
    r.add_argument(
        "--only",
        default=None,
        help="comma-separated experiments: geometry, normalization, sparsify, sink_origins, "
        "interventions, headnorm; None: all",
    )
    r.add_argument("--out", default="tl_geom_reproduce", help="output directory")
    for subparser in sub.choices.values():  # every subcommand: same conventions
        subparser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
        subparser.allow_abbrev = False
    return parser


def _reproduce(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    import pandas as pd

    from tl_geom.app.reproduce import FULL, QUICK, reproduce

    budget = QUICK if args.quick else FULL
    if args.no_headnorm:
        budget = replace(budget, headnorm=None)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    out = Path(args.out)
    only = [e.strip() for e in args.only.split(",") if e.strip()] if args.only else None
    res = reproduce(models, budget=budget, corpus=args.corpus, out=out, experiments=only)
    table = res.to_frame()[["claim", "model", "verdict"]]
    with pd.option_context("display.width", 200, "display.max_colwidth", 70):
        print(table.to_string(index=False))
    counts = pd.Series(table["verdict"]).value_counts().to_dict()
    print(
        f"\n{len(table)} claims: {counts}; {res.run['timings_s']['total']:.0f}s "
        f"({'quick' if args.quick else 'full'}).\n"
        f"Wrote claims.csv, claims.html, reproduce.json to {out.resolve()}"
    )
    return 0


def _headnorm(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from tl_geom.sinks.headnorm import StudyConfig, headnorm_study

    t0 = time.perf_counter()
    cfg = StudyConfig(
        corpus=args.corpus,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        n_layers=args.layers,
        n_heads=args.heads,
        d_head=args.d_head,
        n_ctx=args.n_ctx,
        val_windows=args.val_windows,
        threads=args.threads or None,
        weight_decay=args.weight_decay,
        log_every=args.log_every,
    )
    res = headnorm_study(cfg, progress=True)
    with pd.option_context("display.width", 200):
        print(res.summary.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
        print()
        print(res.by_layer.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"\n{args.steps} steps per arm, seed {args.seed}, {time.perf_counter() - t0:.1f}s")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        res.summary.to_csv(out / "headnorm_summary.csv", index=False)
        res.by_layer.to_csv(out / "headnorm_layers.csv", index=False)
        names = "headnorm_summary.csv, headnorm_layers.csv"
        if args.log_every and res.sink_log is not None:
            res.sink_log.to_csv(out / "headnorm_sink_log.csv", index=False)
            names += ", headnorm_sink_log.csv"
        print(f"Wrote {names} to {out.resolve()}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    import pandas as pd

    from tl_geom.app.summary import final_query_summary
    from tl_geom.lens.data import load_corpus, token_windows
    from tl_geom.lens.models import load_model

    text = load_corpus(args.corpus)  # fail fast on a missing corpus, before loading a model
    t0 = time.perf_counter()
    model = load_model(args.model)
    t1 = time.perf_counter()
    tokens = token_windows(model.tokenizer, text, ctx=args.ctx, windows=args.windows)
    table = final_query_summary(model, tokens, n=args.n)
    t2 = time.perf_counter()
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    mean_sink = float(table["sink"].to_numpy().mean())
    print(
        f"\n{args.model}: {args.windows} windows x {args.ctx} tokens of {args.corpus}; "
        f"final query puts {mean_sink:.2f} of its weight on position 0 on average "
        f"(uniform would be {1 / args.ctx:.4f}). "
        f"Load {t1 - t0:.1f}s, capture+metrics {t2 - t1:.1f}s."
    )
    return 0


def _taxonomy(text: str | None) -> "TaxonomyConfig | None":
    """``--taxonomy`` as a TaxonomyConfig (None: the defaults)."""
    if text is None:
        return None
    from tl_geom.geometry.taxonomy import TaxonomyConfig

    return TaxonomyConfig.parse(text)


def _analyze(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tl_geom.jobs.analyze import run_analysis
    from tl_geom.jobs.config import AnalyzeConfig, from_namespace
    from tl_geom.lens.data import load_corpus

    config = from_namespace(AnalyzeConfig, args, taxonomy=_taxonomy(args.taxonomy))
    out = Path(args.out)
    body = load_corpus(config.corpus)
    result = run_analysis(config, body, out=out, resume=args.resume, strict=args.strict)
    if result.run.get("torchrun", {}).get("rank", 0) != 0:
        return 0  # rank 0 writes the report and prints the summary
    written = ["metrics.csv", "heads.csv", "envelope.csv", "run.json"]
    if not args.no_report:
        from tl_geom.app.report import write_report

        write_report(result, out / "report.html")
        written.append("report.html")
    from tl_geom.app.headline import headline

    m, t = result.metrics, result.run["timings_s"]
    lead = headline(m, result.run.get("window_gaps")) or [
        "no random baseline in this run (--draws 0): top-N only."
    ]
    print(
        f"{args.model}: {args.windows} windows x {args.ctx} tokens, "
        f"{m['layer'].nunique()} layers x {m['head'].nunique()} heads, N = {sorted(set(m['n']))}.\n"
        + "".join(f"{line}\n" for line in lead)
        + f"Mean sink mass {result.heads['sink_mass'].mean():.3f}. "
        f"{t['windows_run']} windows run, {t['windows_resumed']} resumed, {t['total']:.1f}s "
        f"(backend {result.run['backend']}).\n"
        f"Wrote {', '.join(written)} to {out.resolve()}"
    )
    return 0


def _sparsify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tl_geom.jobs.config import SparsifyConfig, from_namespace
    from tl_geom.jobs.sparsify import run_sparsify
    from tl_geom.lens.data import load_corpus

    config = from_namespace(
        SparsifyConfig,
        args,
        ablations=[a.strip() for a in args.ablation.split(",") if a.strip()],
        taxonomy=_taxonomy(args.taxonomy),
    )
    out = Path(args.out)
    res = run_sparsify(config, load_corpus(config.corpus), out=out)
    written = ["sparsify.csv", "sparsify_heads.csv", "sparsify.json"]
    summary = res.summary()
    if not args.no_report:
        from tl_geom.app.sparsify_report import write_sparsify_report

        write_sparsify_report(res.table, summary, res.run, out / "sparsify_report.html")
        written.append("sparsify_report.html")
    best = summary.groupby("ablation").first()
    wins = "; ".join(f"{a}: {r['rule']} ({r['delta_loss']:+.3f})" for a, r in best.iterrows())
    print(
        f"{args.model}: {res.run['heads_total']} heads, base loss {res.run['base_loss']:.4f}. "
        f"Least harmful rule (mean loss change): {wins}.\n"
        f"Wrote {', '.join(written)} to {out.resolve()}"
    )
    return 0


def _interrupted(args: argparse.Namespace) -> str:
    """What Ctrl-C leaves behind, and how to continue."""
    if args.command != "analyze":
        return "tl-geom: interrupted"
    from pathlib import Path

    done = len(list((Path(args.out) / "windows").glob("w*.pt")))
    return (
        f"tl-geom: interrupted; {done} finished windows are kept in {args.out}; "
        "run the same command with --resume to continue"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "analyze":
            return _analyze(args)
        if args.command == "summary":
            return _summary(args)
        if args.command == "sparsify":
            return _sparsify(args)
        if args.command == "headnorm":
            return _headnorm(args)
        if args.command == "reproduce":
            return _reproduce(args)
    except TlGeomError as exc:
        print(f"tl-geom: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a filesystem failure not caught nearer (full disk, read-only)
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"tl-geom: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_interrupted(args), file=sys.stderr)
        return 130
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())

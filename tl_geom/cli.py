"""Command line: ``tl-geom SUBCOMMAND`` (also ``python -m tl_geom``).

User errors (a TlGeomError: missing corpus, bad N, model not available offline) print
one line on stderr and exit with code 2, without a traceback.
"""

import argparse
import sys
import time
from collections.abc import Sequence

from tl_geom.errors import TlGeomError

__all__ = ["main"]


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tl-geom", description="Geometry of attention heads, from the command line."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "summary",
        help="per-layer sink mass, entropy and top-N separability of the final query",
    )
    s.add_argument(
        "--model", default="smollm2-135m", help="shipped name, local dir or cached hub id"
    )
    s.add_argument("--corpus", default="war_and_peace", help="shipped corpus name or a UTF-8 file")
    s.add_argument("--windows", type=int, default=2, help="number of windows (default 2)")
    s.add_argument("--ctx", type=int, default=256, help="tokens per window (default 256)")
    s.add_argument("--n", type=_int_list, default=[1, 4, 16], help="N values, e.g. 1,4,16")
    return parser


def _summary(args: argparse.Namespace) -> int:
    import pandas as pd

    from tl_geom.data import load_corpus, token_windows
    from tl_geom.models import load_model
    from tl_geom.summary import final_query_summary

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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "summary":
            return _summary(args)
    except TlGeomError as exc:
        print(f"tl-geom: error: {exc}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())

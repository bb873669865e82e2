"""Command line: ``scmetacell run`` (metacells of an ``.h5ad``) and ``scmetacell demo`` (bundled PBMC 3k)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scmetacell", description="Metacells for single-cell data.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run metacells end to end on the bundled PBMC 3k data")
    d.add_argument("--out", default="scmetacell_demo", help="output folder (default: ./scmetacell_demo)")
    r = sub.add_parser("run", help="compute metacells of an .h5ad file (raw counts in X or layers['counts'])")
    r.add_argument("input", help="input .h5ad (cells × genes)")
    r.add_argument("--out", required=True, help="output .h5ad of the metacells")
    size = r.add_mutually_exclusive_group()
    size.add_argument("--n-metacell", type=int, default=None, help="number of metacells")
    size.add_argument("--gamma", type=float, default=None, help="cells per metacell (default 15)")
    r.add_argument("--batch-key", default=None, help="obs column of samples: metacells built per sample")
    r.add_argument("--counts-key", default=None, help="layer with raw counts (default: X, else 'counts')")
    r.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    r.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="training epochs (default 0: the k-means initialisation, untrained)",
    )
    r.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda' (default auto)")
    r.add_argument("--cells-out", default=None, help="also write the cells, annotated, to this .h5ad")
    return p


def _write_atomic(obj, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix=".h5ad", dir=folder)
    os.close(fd)
    try:
        obj.write_h5ad(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _run(args: argparse.Namespace) -> int:
    import anndata as ad

    from . import tl

    if not os.path.exists(args.input):
        print(f"scmetacell run: input {args.input!r} not found.", file=sys.stderr)
        return 2
    adata = ad.read_h5ad(args.input)
    kwargs = {}
    if args.max_epochs is not None:
        kwargs["train_epoch"] = args.max_epochs
    try:
        mc = tl.metacell(
            adata,
            n_metacell=args.n_metacell,
            gamma=args.gamma,
            batch_key=args.batch_key,
            counts_key=args.counts_key,
            random_seed=args.seed,
            device=args.device,
            **kwargs,
        )
    except (ValueError, KeyError, NotImplementedError) as err:
        print(f"scmetacell run: {err}", file=sys.stderr)
        return 2
    _write_atomic(mc, args.out)
    d = mc.uns["metacell"]["diagnostics"]
    print(
        f"{d['n_delivered']} metacells of {adata.n_obs} cells (sizes {d['size_min']}–{d['size_max']}, "
        f"{d['epochs_run']} epochs, {d['seconds_total']:.1f} s) written to {args.out}"
    )
    if args.cells_out:
        _write_atomic(adata, args.cells_out)
        print(f"annotated cells written to {args.cells_out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scmetacell`` command."""
    args = _build_parser().parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        return run_demo(args.out)
    if args.command == "run":
        return _run(args)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Command line: `python -m spade generate …` (or the `spade` script), `studio`, `export`
and `check`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from spade.config import MAX_SEED
from spade.console import run

log = logging.getLogger("spade")


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value} is not in 0..{MAX_SEED}")
    return value


def _region(text: str):
    from spade.generate import RegionSpec

    try:
        return RegionSpec.parse(text, MAX_SEED)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0..65535)")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, without running anything (tests/test_doc_commands.py checks the
    docs' `spade` commands against it)."""
    from spade import paths
    from spade.painter import MAX_INTERPOLATE
    from spade.runtime import RUNTIMES

    p = argparse.ArgumentParser(prog="spade", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="turn rough drawings (or pictures) into anime faces")
    g.add_argument("input", type=Path, help="an image, or a folder of images")
    g.add_argument("--model", type=Path, default=paths.GENERATOR)
    g.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="auto: on the CPU the fastest of torch, onnx (ONNX Runtime) and openvino, measured",
    )
    g.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out)")
    g.add_argument("--roughen", action="store_true", help="roughen ordinary pictures first")
    g.add_argument("--seed", type=_seed, default=0, help=f"style seed, 0..{MAX_SEED}")
    g.add_argument("--style", type=Path, help="take z from this reference face (needs use_vae)")
    g.add_argument(
        "--region",
        type=_region,
        action="append",
        default=[],
        metavar="WHERE=STYLE",
        help="restyle one region of the rough: WHERE is a point X,Y of the input (the "
        "flat-colour blob under it) or a colour #RRGGBB of the rough; STYLE is seed:N or a "
        "reference picture (its style inside that region); repeat for more regions",
    )
    g.add_argument(
        "--interpolate",
        type=int,
        default=0,
        metavar="K",
        help=f"write a strip of K faces (2..{MAX_INTERPOLATE}) from --seed to --seed-to",
    )
    g.add_argument("--seed-to", type=_seed, help="end seed of --interpolate (default: seed+1)")
    g.add_argument("--save-rough", action="store_true", help="also write the rough used")
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files already in --out (without it they are refused; an input never is)",
    )
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")

    s = sub.add_parser("studio", help="paint roughs in the browser and see the faces")
    s.add_argument(
        "--model",
        type=Path,
        help="default: on the CPU models/student.pt when it exists, else models/generator.pt",
    )
    s.add_argument("--runtime", choices=RUNTIMES, default="auto", help="as for generate")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    s.add_argument("--port", type=_port, default=8000, help="port (default: 8000; 0 = any free)")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    s.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto: bf16 where the CPU/GPU computes it natively, else fp32 (bf16 is ~2x faster "
        "at 256 px; its faces differ from `generate`'s by about 1/255)",
    )
    s.add_argument(
        "--incremental",
        choices=["auto", "on", "off"],
        default="auto",
        help="redraw only what a stroke changed (auto: when a stroke measures faster that way)",
    )

    e = sub.add_parser("export", help="write a packed .npy image array as PNG files")
    e.add_argument("array", type=Path, help="e.g. data/roughs/test.npy")
    e.add_argument("out", type=Path, help="output folder")
    e.add_argument("--limit", type=int, help="only the first N images")

    c = sub.add_parser("check", help="validate params.yaml (every section) and exit")
    c.add_argument("params", type=Path, nargs="?", default=Path("params.yaml"))
    return p


def _generate(args: argparse.Namespace) -> None:
    from spade.devices import resolve_device
    from spade.errors import UserError
    from spade.generate import GenerateOptions, generate, list_inputs
    from spade.painter import MAX_INTERPOLATE, load_painter

    if args.interpolate and not 2 <= args.interpolate <= MAX_INTERPOLATE:
        raise UserError(f"--interpolate K needs K >= 2 and K <= {MAX_INTERPOLATE}")
    if args.style and args.interpolate:
        raise UserError("--style and --interpolate cannot be combined")
    if args.region and args.interpolate:
        raise UserError("--region and --interpolate cannot be combined")
    if args.seed_to is not None and not args.interpolate:
        raise UserError("--seed-to is the end of a strip: use it with --interpolate K")
    if args.seed_to is None and args.seed == MAX_SEED and args.interpolate:
        raise UserError(f"--interpolate from --seed {MAX_SEED} needs an explicit --seed-to")
    inputs = list_inputs(args.input)
    device = resolve_device(args.device)
    painter = load_painter(args.model, device, args.runtime)
    opts = GenerateOptions(
        seed=args.seed,
        roughen=args.roughen,
        style=args.style,
        regions=tuple(args.region),
        interpolate=args.interpolate,
        seed_to=args.seed_to,
        save_rough=args.save_rough,
        overwrite=args.overwrite,
    )
    written = generate(painter, inputs, args.out, opts)
    log.info("wrote %d file(s) to %s", len(written), args.out)


def _studio(args: argparse.Namespace) -> None:
    from spade.devices import resolve_device
    from spade.painter import default_model, load_painter
    from spade.runtime import resolve_precision
    from spade.studio import torch_thread
    from spade.studio.server import serve

    device = resolve_device(args.device)
    path = args.model or default_model(device)
    precision = resolve_precision(args.precision, device)
    painter = torch_thread.call(load_painter, path, device, args.runtime, precision)
    serve(painter, args.host, args.port, model_name=str(path), incremental=args.incremental)


def _export_pngs(args: argparse.Namespace) -> None:
    from spade.image_files import export_pngs

    n = export_pngs(args.array, args.out, args.limit)
    log.info("wrote %d PNG files to %s", n, args.out)


def _check(args: argparse.Namespace) -> None:
    from spade.config import load_params

    load_params(args.params)
    log.info("%s: every section is valid", args.params)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    commands = {
        "generate": _generate,
        "studio": _studio,
        "export": _export_pngs,
        "check": _check,
    }
    run(lambda: commands[args.command](args))


if __name__ == "__main__":
    main(sys.argv[1:])

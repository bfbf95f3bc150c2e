"""Command line: `python -m spade generate …` (or the `spade` script) and `spade export …`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from spade.cli import run

log = logging.getLogger("spade")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spade", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="turn rough drawings (or pictures) into anime faces")
    g.add_argument("input", type=Path, help="an image, or a folder of images")
    g.add_argument("--model", type=Path, default=Path("models/generator.pt"))
    g.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out)")
    g.add_argument("--roughen", action="store_true", help="roughen ordinary pictures first")
    g.add_argument("--seed", type=int, default=0, help="seed of z and the noise")
    g.add_argument("--style", type=Path, help="take z from this reference face (needs use_vae)")
    g.add_argument(
        "--interpolate",
        type=int,
        default=0,
        metavar="K",
        help="write a strip of K faces from --seed to --seed-to",
    )
    g.add_argument("--seed-to", type=int, help="end seed of --interpolate (default: seed+1)")
    g.add_argument("--save-rough", action="store_true", help="also write the rough used")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")

    e = sub.add_parser("export", help="write a packed .npy image array as PNG files")
    e.add_argument("array", type=Path, help="e.g. data/roughs/test.npy")
    e.add_argument("out", type=Path, help="output folder")
    e.add_argument("--limit", type=int, help="only the first N images")
    return p


def _generate(args: argparse.Namespace) -> None:
    from spade.checkpoint import load_generator
    from spade.errors import UserError
    from spade.evaluate import resolve_device
    from spade.generate import FaceGenerator, GenerateOptions, generate, list_inputs

    if args.interpolate == 1 or args.interpolate < 0:
        raise UserError("--interpolate K needs K >= 2")
    if args.style and args.interpolate:
        raise UserError("--style and --interpolate cannot be combined")
    inputs = list_inputs(args.input)
    device = resolve_device(args.device)
    model, state = load_generator(args.model, device)
    gen = FaceGenerator(model, state["recipe"], device)
    opts = GenerateOptions(
        seed=args.seed,
        roughen=args.roughen,
        style=args.style,
        interpolate=args.interpolate,
        seed_to=args.seed_to,
        save_rough=args.save_rough,
    )
    written = generate(gen, inputs, args.out, opts)
    log.info("wrote %d file(s) to %s", len(written), args.out)


def _export(args: argparse.Namespace) -> None:
    from spade.images import export_pngs

    n = export_pngs(args.array, args.out, args.limit)
    log.info("wrote %d PNG files to %s", n, args.out)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    run(lambda: {"generate": _generate, "export": _export}[args.command](args))


if __name__ == "__main__":
    main(sys.argv[1:])

"""Style labels that travel with a dataset: `styles.csv` at the root of a folder or .zip.

One row per image: its path (as the source names it) and one column per style factor holding
that image's level, e.g. `path,shading,eyes,hair,background` / `000007.png,hatched,sparkle,…`. The
demo stage writes it next to its faces; a real dataset may bring one. The sample stage copies each
sampled image's levels into its manifest (one column per factor), where evaluation reads them.

A labelled dataset may also say *where* each factor is drawn: `regions/<image's stem>.png`, a
one-channel 8-bit map of the image's size whose pixels hold 1 + the factor's column index (0: no
factor), e.g. the hair is `hair`'s region. The sample stage packs the test split's maps
(`spade.sample`), and evaluation paints one factor's region with another face's style
(`style_control_regional`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath

from spade.errors import UserError

LABELS_NAME = "styles.csv"
PATH_COLUMN = "path"
MAX_FACTORS = 16
STYLE_PREFIX = "style_"  # a factor's column in the sample manifest: style_<factor>
REGIONS_DIR = "regions"  # region maps, beside styles.csv


def region_map_name(image_name: str) -> str:
    """Where the region map of image `image_name` (a name in the source) is."""
    return f"{REGIONS_DIR}/{PurePosixPath(image_name).with_suffix('.png')}"


def labels_csv(factors: Sequence[str], rows: Iterable[tuple[str, Mapping[str, str]]]) -> bytes:
    """The file's bytes: a header, then (path, {factor: level}) rows in the given order."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([PATH_COLUMN, *factors])
    for path, levels in rows:
        writer.writerow([path, *(levels[f] for f in factors)])
    return buf.getvalue().encode()


def parse_labels(data: bytes, where: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """(factors, {path: {factor: level}}) from a labels file; a broken one is a `UserError`."""
    try:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{where} is not a readable CSV file of style labels ({e})") from None
    if not rows or rows[0][:1] != [PATH_COLUMN] or not 1 < len(rows[0]) <= MAX_FACTORS + 1:
        raise UserError(
            f"{where}: the first line must be '{PATH_COLUMN},<factor>,…' "
            f"(1 to {MAX_FACTORS} style factors)"
        )
    factors = rows[0][1:]
    if len(set(factors)) != len(factors) or not all(f.isidentifier() for f in factors):
        raise UserError(f"{where}: factor names must be distinct identifiers, got {factors}")
    labels: dict[str, dict[str, str]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(factors) + 1 or not all(row):
            raise UserError(f"{where} line {line}: expected {len(factors) + 1} non-empty values")
        labels[row[0]] = dict(zip(factors, row[1:], strict=True))
    return factors, labels


def manifest_styles(manifest: Path, split: str) -> dict[str, list[str]]:
    """{factor: the levels of `split`'s images, in index order} from a sample manifest; empty
    when the source had no labels."""
    with open(manifest, newline="") as f:
        rows = sorted(
            (r for r in csv.DictReader(f) if r["split"] == split), key=lambda r: int(r["index"])
        )
    if not rows:
        return {}
    factors = [k.removeprefix(STYLE_PREFIX) for k in rows[0] if k.startswith(STYLE_PREFIX)]
    return {f: [r[STYLE_PREFIX + f] for r in rows] for f in factors}

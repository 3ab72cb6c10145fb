"""What a trained model needs to turn new raw data into its table keys. Pure (no MPI).

The keys of a row depend on the text format, the field names and (CSV) schema, the
hashing seed and the table sizes; a model carries them as an ``InputSpec`` so that data
scored later go through the very readers and hashing that training used.
"""
from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..config import TrainConfig, _csv_schema
from ..errors import DataError
from . import Batch, Source
from .criteo import CriteoFormat
from .csvdata import CsvFormat, CsvSchema, read_header
from .hashing import FIELD_NAMES, FieldHashing
from .libsvm import LibSVMFormat
from .lines import line_offsets, max_colons, read_lines
from .parse import Format, parse_block
from .plan import field_hashing
from .shards import read_manifest
from .shardsource import ShardSource
from .textsource import TextSource, check_file
from .unlabeled import csv_without_label, has_label, without_label

SYNTHETIC = "synthetic"          # the built-in data: rows, but no text lines
_ALIASES = {"libfm": "libsvm"}


@dataclass(frozen=True)
class InputSpec:
    """How rows become keys: ``format`` (criteo, libsvm, libffm, csv or synthetic),
    field ``names`` (none for libSVM slots), slots per row (``width``; None: as many as
    the data have, which only LR and FM allow), the hashing seed and table ranges, and for
    CSV the schema and the training file's header."""

    format: str
    names: tuple[str, ...]
    width: Optional[int]
    seed: int
    shared_rows: int
    own: tuple[int, ...] = ()
    padded: bool = False
    csv: Optional[CsvSchema] = None
    header: Optional[tuple[str, ...]] = None

    @property
    def hashing(self) -> FieldHashing:
        return FieldHashing(self.shared_rows, self.seed, self.own, self.padded)

    def record(self) -> dict:
        """The spec as values ``json.dumps`` takes (kept in an exported model file)."""
        return asdict(self)

    @classmethod
    def of_record(cls, doc: dict, where: str) -> "InputSpec":
        """The spec from ``record``'s values; ``where`` names the file in errors."""
        try:
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in doc.items()}
            if values.get("csv") is not None:
                values["csv"] = _csv_schema(doc["csv"], where)
            return cls(**values)
        except (TypeError, AttributeError) as exc:
            raise DataError(f"{where}: not a valid input description ({exc})") from None

    @classmethod
    def of_settings(cls, cfg: TrainConfig, width: Optional[int] = None) -> "InputSpec":
        """The spec of a training job's data, from its settings: the built-in data, a
        text file (its header only is read: CSV) or a folder of 'mpips prep' (its
        manifest). ``width``: the slots a model needs (DeepFM on libSVM)."""
        if cfg.data is None:
            hashing = field_hashing(cfg, FIELD_NAMES, cfg.seed)
            return cls(SYNTHETIC, FIELD_NAMES, len(FIELD_NAMES), cfg.seed,
                       hashing.shared_rows, hashing.own)
        path = Path(cfg.data)
        if path.is_dir():
            m = read_manifest(path)
            fmt, names, seed, padded = m.format, tuple(m.names), m.seed, m.padded
            schema = _csv_schema(m.schema, str(path / "manifest.json")) if m.schema else None
            header = (schema.label, *schema.columns) if schema else None
        elif path.is_file():
            fmt, seed = _ALIASES.get(cfg.format, cfg.format), cfg.seed
            padded = fmt in ("libsvm", "libffm")
            schema = cfg.csv
            names = FIELD_NAMES if fmt == "criteo" else schema.columns if schema else ()
            header = tuple(read_header(path, schema)) if schema else None
        else:
            raise DataError(f"{path}: the training data are gone; their format and hashing "
                            f"seed (a folder of 'mpips prep' keeps its own) cannot be told "
                            f"without them: export the model where they are")
        hashing = field_hashing(cfg, names, seed, padded)
        return cls(fmt, names, width if padded else len(names), seed, hashing.shared_rows,
                   hashing.own, padded, schema, header)

    def check_format(self, name: Optional[str]) -> None:
        """``--format`` of data to score must be the model's own (keys depend on it)."""
        if name is not None and _ALIASES.get(name, name) != self.format:
            raise DataError(f"--format {name}: the model was trained on {self.format} data; "
                            f"another format gives other keys")

    def text_format(self, path: Optional[Path] = None, width: Optional[int] = None
                    ) -> Format:
        """The reader of text in this spec's format: of file ``path`` (CSV: by its own
        header), else of lines ``width`` slots wide (libSVM)."""
        if self.format == SYNTHETIC:
            raise DataError("the model was trained on the built-in synthetic data, which "
                            "has no text format: score its test rows (no --data) or ids")
        if self.format == "criteo":
            return CriteoFormat()
        if self.format == "csv":
            header = read_header(path, self.csv) if path is not None else list(self.header)
            return CsvFormat(self.csv, header)
        ffm = self.format == "libffm"
        if path is not None and width is None and self.width is None:
            width = max_colons(path) // (2 if ffm else 1)
        return LibSVMFormat(self.slots(width or 1), ffm)

    def slots(self, found: int) -> int:
        """Slots for libSVM rows at most ``found`` features wide: the model's own width,
        if it has one (a longer line is then a bad line), else ``found``."""
        return self.width if self.width is not None else max(found, 1)

    def reader(self, path: Optional[Path], first_line: str,
               header: Optional[Sequence[str]] = None, width: Optional[int] = None
               ) -> tuple[Format, bool]:
        """The format for data whose first data line is ``first_line`` (of ``path``, or
        of lines under CSV ``header``), and whether they carry labels."""
        if self.format == "csv":
            names = list(header) if header is not None else read_header(
                path, self.csv, label=False) if path is not None else list(self.header)
            if self.csv.label not in names:
                missing = [c for c in self.csv.columns if c not in names]
                if missing:
                    raise DataError(f"{path or 'the header'}: no column {missing[0]!r} (the "
                                    f"model's [csv] schema names it)")
                return csv_without_label(self.csv, names), False
            return CsvFormat(self.csv, names), True
        fmt = self.text_format(path, width)
        return (fmt, True) if has_label(fmt, first_line) else (without_label(fmt), False)

    def source(self, path: Path, on_bad: str = "error") -> tuple[Source, bool]:
        """Data to score from ``path`` (a text file or a folder of 'mpips prep'), read
        and hashed as in training; and whether its rows carry labels."""
        if path.is_dir():
            return self._shards(path), True
        check_file(path)
        fmt, labeled = self.reader(path, first_data_line(path, self.format == "csv"))
        return TextSource(path, fmt, self.hashing, on_bad), labeled

    def _shards(self, folder: Path) -> ShardSource:
        m = read_manifest(folder)
        schema = _csv_schema(m.schema, str(folder)) if m.schema else None
        if (_ALIASES.get(m.format, m.format), tuple(m.names), m.seed, schema) != (
                self.format, self.names, self.seed, self.csv):
            raise DataError(f"{folder}: prepared with another format, schema or hashing seed "
                            f"than the model's data ({self.format}, seed {self.seed})")
        if self.width is not None and m.fields > self.width:
            raise DataError(f"{folder}: rows of {m.fields} slots, the model reads "
                            f"{self.width}")
        return ShardSource(folder, self.hashing, self.width)

    def batch(self, lines: Sequence[str], header: Optional[str] = None) -> tuple[Batch, bool]:
        """Raw text lines (no header line; CSV: under ``header``, by default the
        training file's) as one batch of keys, and whether they carried labels."""
        names = next(csv.reader([header], delimiter=self.csv.delimiter)) \
            if header is not None and self.csv is not None else None
        width = max((len(line.split()) for line in lines), default=1)
        fmt, labeled = self.reader(None, lines[0] if lines else "", names, width)
        parsed, _ = parse_block(fmt, list(lines), self.seed, "<lines>", 1)
        return Batch(self.hashing.rows(parsed.ids), parsed.vals, parsed.labels), labeled


def first_data_line(path: Path, header: bool) -> str:
    """The first line after the header (if any) of a text file ('' if none)."""
    skip = int(header)
    begin, end = line_offsets(path, [skip, skip + 1])
    with open(path, "rb") as fh:
        lines = read_lines(fh, int(begin), int(end))
    return lines[0] if lines else ""

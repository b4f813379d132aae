"""Datasets operators upload: calibration, evaluation and drift-reference data.

Theory of operation: a dataset is one ``.npz`` archive holding ``x`` (``[n, F]``
real numbers, read as float32), and optionally ``y`` (``[n]`` integer class
labels, read as int64), ``feature_names`` (``[F]`` unicode) and ``class_names``
(``[K]`` unicode). Any other member is refused, so a misnamed label array
(``labels``, ``Y``) cannot silently turn a labelled set into an unlabelled one.

Uploads are untrusted, so :func:`load_dataset` never hands the archive to
``numpy.load``. It opens each known member itself, parses the ``.npy`` header
with :mod:`numpy.lib.format` (bounded header size, no pickle), refuses object,
structured and other non-numeric dtypes before reading a byte of data, and then
reads at most ``max_rows`` rows (and at most ``max_elements`` values), streaming
and discarding the rest, so neither a huge array nor a compressed "zip bomb" can
exhaust memory. Fortran-ordered arrays (what ``DataFrame.to_numpy()`` often
gives) are read column by column under the same bound.

Invariants of :class:`Dataset`, checked on construction: ``x`` is finite
float32 ``[n >= 1, F >= 1]``; ``y`` is int64 ``[n]`` with labels in
``range(len(class_names))`` (or non-negative without class names); names are
distinct non-empty strings of the right count. Arrays are read-only copies.
Every violation raises :class:`~control_plane.errors.InvalidInputError` with a
one-line message.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from control_plane.errors import InvalidInputError

#: Rows read from an upload by default; the rest of the file is skipped.
DEFAULT_MAX_ROWS = 1_000_000
#: Values (rows x features) read by default: 128 MiB of float32.
DEFAULT_MAX_ELEMENTS = 1 << 25
#: Largest feature or class count accepted.
MAX_NAMES = 65_536
#: Longest feature or class name, in characters.
MAX_NAME_CHARS = 256
#: Bytes read or skipped per chunk while streaming a member.
_CHUNK_BYTES = 1 << 20
_MEMBERS = ("x", "y", "feature_names", "class_names")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features ``x [n, F]`` with optional labels ``y [n]`` and names.

    ``rows_in_file`` is the row count of the file it was read from when that
    was more than ``max_rows`` (the rest was not read), else ``None``.
    """

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64] | None = None
    feature_names: tuple[str, ...] | None = None
    class_names: tuple[str, ...] | None = None
    rows_in_file: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        x = np.asarray(self.x)
        if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
            raise InvalidInputError(f"x must be a [rows >= 1, features >= 1] array, got {_dims(x)}")
        if not (np.issubdtype(x.dtype, np.number) and not np.iscomplexobj(x)):
            raise InvalidInputError(f"x must hold real numbers, got dtype {x.dtype}")
        x = _frozen(x, np.float32)
        if not np.all(np.isfinite(x)):
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise InvalidInputError(f"x holds {bad} NaN or infinite values (after float32)")
        object.__setattr__(self, "x", x)
        if self.feature_names is not None:
            names = _names(self.feature_names, "feature_names")
            if len(names) != x.shape[1]:
                raise InvalidInputError(
                    f"{len(names)} feature_names for {x.shape[1]} features in x"
                )
            object.__setattr__(self, "feature_names", names)
        if self.class_names is not None:
            classes = _names(self.class_names, "class_names")
            if len(classes) < 2:
                raise InvalidInputError("class_names must name at least two classes")
            object.__setattr__(self, "class_names", classes)
        if self.y is not None:
            object.__setattr__(self, "y", self._labels(np.asarray(self.y), x.shape[0]))

    def _labels(self, y: npt.NDArray[Any], rows: int) -> npt.NDArray[np.int64]:
        if y.shape != (rows,):
            raise InvalidInputError(f"y must be [{rows}] to match x, got {_dims(y)}")
        if not np.issubdtype(y.dtype, np.integer):
            raise InvalidInputError(f"y must hold integer class labels, got dtype {y.dtype}")
        low, high = int(y.min()), int(y.max())
        limit = len(self.class_names) if self.class_names is not None else MAX_NAMES
        if low < 0 or high >= limit:
            allowed = f"0..{limit - 1}"
            raise InvalidInputError(f"labels range {low}..{high}; must be {allowed}")
        labels: npt.NDArray[np.int64] = _frozen(y, np.int64)
        return labels

    @property
    def n_rows(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.x.shape[1])

    @property
    def labelled(self) -> bool:
        return self.y is not None


def load_dataset(
    path: Path,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> Dataset:
    """Read a dataset ``.npz``, reading no more than ``max_rows`` rows.

    Raises:
        InvalidInputError: not an npz archive, an unknown or pickled member, a
            wrong shape or dtype, non-finite features, labels that do not match.
    """
    if max_rows < 1 or max_elements < 1:
        raise ValueError("max_rows and max_elements must be positive")
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    except (zipfile.BadZipFile, ValueError) as exc:
        raise InvalidInputError(f"{path.name} is not an .npz archive: {_one_line(exc)}") from exc
    with archive:
        members = _members(archive, path.name)
        if "x" not in members:
            raise InvalidInputError(f"{path.name} has no 'x' array")
        try:
            x, rows_in_file = _read_x(archive, members["x"], max_rows, max_elements)
            rows = x.shape[0]
            y = None
            if "y" in members:
                y = _read_array(archive, members["y"], "y", kinds="iu", rows=(rows_in_file, rows))
            names = {
                key: tuple(str(s) for s in _read_array(archive, members[key], key, kinds="U"))
                for key in ("feature_names", "class_names")
                if key in members
            }
        except InvalidInputError as exc:
            raise InvalidInputError(f"{path.name}: {exc.message}") from exc
        except (OSError, zipfile.BadZipFile, EOFError, ValueError, RuntimeError) as exc:
            raise InvalidInputError(f"{path.name} is malformed: {_one_line(exc)}") from exc
    try:
        return Dataset(
            x=x,
            y=y,
            feature_names=names.get("feature_names"),
            class_names=names.get("class_names"),
            rows_in_file=rows_in_file if rows_in_file > rows else None,
        )
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path.name}: {exc.message}") from exc


def save_dataset(path: Path, dataset: Dataset) -> Path:
    """Write ``dataset`` atomically as an uncompressed ``.npz`` that :func:`load_dataset` reads."""
    path = Path(path)
    arrays: dict[str, npt.NDArray[Any]] = {"x": dataset.x}
    if dataset.y is not None:
        arrays["y"] = dataset.y
    if dataset.feature_names is not None:
        arrays["feature_names"] = np.array(dataset.feature_names, dtype=np.str_)
    if dataset.class_names is not None:
        arrays["class_names"] = np.array(dataset.class_names, dtype=np.str_)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# -- reading members without numpy.load ---------------------------------------


def _members(archive: zipfile.ZipFile, name: str) -> dict[str, zipfile.ZipInfo]:
    found: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        key = info.filename.removesuffix(".npy")
        if key not in _MEMBERS or not info.filename.endswith(".npy"):
            raise InvalidInputError(
                f"{name} holds {info.filename!r}; a dataset holds only {', '.join(_MEMBERS)}"
            )
        if key in found:
            raise InvalidInputError(f"{name} holds {info.filename!r} twice")
        found[key] = info
    return found


def _header(fp: IO[bytes], key: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise InvalidInputError(f"{key!r} uses .npy format {version}; only 1.0 and 2.0 are read")
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise InvalidInputError(f"{key!r} holds Python objects or records; not a plain array")
    return tuple(int(n) for n in shape), bool(fortran), dtype


def _read_x(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_rows: int, max_elements: int
) -> tuple[npt.NDArray[Any], int]:
    with archive.open(info) as fp:
        shape, fortran, dtype = _header(fp, "x")
        if len(shape) != 2:
            raise InvalidInputError(f"x must be 2-D [rows, features], got {list(shape)}")
        if dtype.kind not in "iuf":
            raise InvalidInputError(f"x must hold real numbers, got dtype {dtype}")
        rows_in_file, features = shape
        if features > MAX_NAMES:
            raise InvalidInputError(f"x has {features} features; at most {MAX_NAMES} are accepted")
        keep = min(rows_in_file, max_rows, max(1, max_elements // max(features, 1)))
        if not fortran:
            data = _read_exact(fp, keep * features * dtype.itemsize)
            x = np.frombuffer(data, dtype=dtype).reshape(keep, features)
        else:
            columns = []
            for _ in range(features):
                columns.append(np.frombuffer(_read_exact(fp, keep * dtype.itemsize), dtype=dtype))
                _skip(fp, (rows_in_file - keep) * dtype.itemsize)
            x = np.stack(columns, axis=1) if columns else np.empty((keep, 0), dtype)
    return x, rows_in_file


def _read_array(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    key: str,
    *,
    kinds: str,
    rows: tuple[int, int] | None = None,
) -> npt.NDArray[Any]:
    """A 1-D member; with ``rows=(in_file, keep)`` its length must be ``in_file``."""
    with archive.open(info) as fp:
        shape, _fortran, dtype = _header(fp, key)
        if dtype.kind not in kinds:
            want = "integer class labels" if kinds == "iu" else "unicode strings"
            raise InvalidInputError(f"{key} must hold {want}, got dtype {dtype}")
        if len(shape) != 1:
            raise InvalidInputError(f"{key} must be 1-D, got {list(shape)}")
        length = shape[0]
        if rows is not None and length != rows[0]:
            raise InvalidInputError(f"{key} has {length} entries but x has {rows[0]} rows")
        if rows is None and length > MAX_NAMES:
            raise InvalidInputError(f"{key} has {length} entries; at most {MAX_NAMES}")
        if dtype.kind == "U" and dtype.itemsize > 4 * MAX_NAME_CHARS:
            raise InvalidInputError(f"{key} entries are over {MAX_NAME_CHARS} characters")
        count = rows[1] if rows is not None else length
        return np.frombuffer(_read_exact(fp, count * dtype.itemsize), dtype=dtype)


def _read_exact(fp: IO[bytes], size: int) -> bytes:
    buffer = io.BytesIO()
    remaining = size
    while remaining > 0:
        chunk = fp.read(min(remaining, _CHUNK_BYTES))
        if not chunk:
            raise EOFError(f"array data ends {remaining} bytes early")
        buffer.write(chunk)
        remaining -= len(chunk)
    return buffer.getvalue()


def _skip(fp: IO[bytes], size: int) -> None:
    remaining = size
    while remaining > 0:
        chunk = fp.read(min(remaining, _CHUNK_BYTES))
        if not chunk:
            raise EOFError(f"array data ends {remaining} bytes early")
        remaining -= len(chunk)


# -- small helpers --------------------------------------------------------------


def _frozen(array: npt.NDArray[Any], dtype: type[Any]) -> Any:
    with np.errstate(over="ignore", invalid="ignore"):  # overflow -> inf, refused by the caller
        out = np.array(array, dtype=dtype, order="C", copy=True)
    out.setflags(write=False)
    return out


def _names(value: Any, what: str) -> tuple[str, ...]:
    names = tuple(value)
    if not names or not all(isinstance(s, str) and s for s in names):
        raise InvalidInputError(f"{what} must be non-empty strings")
    if len(set(names)) != len(names):
        raise InvalidInputError(f"{what} must be distinct")
    if any(len(s) > MAX_NAME_CHARS for s in names):
        raise InvalidInputError(f"{what} entries must be at most {MAX_NAME_CHARS} characters")
    return names


def _dims(array: npt.NDArray[Any]) -> str:
    return str(list(array.shape))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


__all__ = [
    "DEFAULT_MAX_ELEMENTS",
    "DEFAULT_MAX_ROWS",
    "Dataset",
    "load_dataset",
    "save_dataset",
]

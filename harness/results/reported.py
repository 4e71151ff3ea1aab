"""Published numbers (results/reported/*.csv), shown beside ours but never mixed into runs.csv.

Each file holds rows of :data:`REPORTED_COLUMNS`. Validation is strict because these numbers are typed
in by hand from the specs: a misplaced column or a percentage where a fraction belongs must fail loudly
rather than end up in a paper table.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

REPORTED_COLUMNS: tuple[str, ...] = (
    "dataset", "arch", "method", "base_top1", "top1", "macs_reduction", "params_reduction", "source", "note",
)
_TEXT = ("dataset", "arch", "method", "source", "note")
_REQUIRED_TEXT = ("dataset", "arch", "method", "source")
_ACCURACY = ("base_top1", "top1")  # percent, 0..100; base_top1 may be blank
_REDUCTION = ("macs_reduction", "params_reduction")  # fractions in [0, 1); blank where the source gives none


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="str" if c in _TEXT else "float64") for c in REPORTED_COLUMNS})


def validate_reported(df: pd.DataFrame, *, source: str | os.PathLike = "<reported>") -> pd.DataFrame:
    """Validate one reported table (read as strings) and return it typed: numbers float, blanks NaN."""
    where = os.fspath(source)
    cols = list(df.columns)
    missing = [c for c in REPORTED_COLUMNS if c not in cols]
    if missing:
        raise ValueError(f"{where}: missing column(s): {', '.join(missing)}")
    unknown = [c for c in cols if c not in REPORTED_COLUMNS]
    if unknown:
        raise ValueError(f"{where}: unknown column(s): {', '.join(unknown)}")
    rows = df.fillna("").astype(str).to_dict("records")
    data: dict[str, list] = {c: [] for c in REPORTED_COLUMNS}
    for i, row in enumerate(rows):
        for col in _TEXT:
            data[col].append(row[col].strip())
        for col in _ACCURACY + _REDUCTION:
            text = row[col].strip()
            try:
                data[col].append(float(text) if text else float("nan"))
            except ValueError:
                raise ValueError(f"{where}: row {i + 2}: column {col!r} is not a number: {text!r}") from None
    out = pd.DataFrame({c: pd.Series(data[c], dtype="str" if c in _TEXT else "float64")
                        for c in REPORTED_COLUMNS})
    for i in range(len(out)):
        row = out.iloc[i]
        line = f"{where}: row {i + 2}"  # +1 for the header, +1 for 1-based lines
        for col in _REQUIRED_TEXT:
            if not row[col]:
                raise ValueError(f"{line}: column {col!r} is empty")
        if pd.isna(row["top1"]):
            raise ValueError(f"{line}: column 'top1' is empty")
        for col in _ACCURACY:
            if pd.notna(row[col]) and not 0.0 <= row[col] <= 100.0:
                raise ValueError(f"{line}: column {col!r} = {row[col]} is not a percentage in [0, 100]")
        for col in _REDUCTION:
            if pd.notna(row[col]) and not 0.0 <= row[col] < 1.0:
                raise ValueError(f"{line}: column {col!r} = {row[col]} is not a fraction in [0, 1) "
                                 f"(write 2x as 0.5, 34.2 % as 0.342)")
    return out[list(REPORTED_COLUMNS)]


def load_reported(reported_dir: str | os.PathLike) -> pd.DataFrame:
    """Concatenate and validate every ``*.csv`` in ``reported_dir`` (sorted by file name, rows in file order).

    Returns a frame with :data:`REPORTED_COLUMNS`; empty (with those columns) if the folder has no CSV.
    Raises ``FileNotFoundError`` if the folder does not exist, ``ValueError`` on a malformed file.
    """
    folder = Path(reported_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"reported folder not found: {folder}")
    frames = []
    for path in sorted(folder.glob("*.csv")):
        raw = pd.read_csv(path, dtype="str", keep_default_na=False, skipinitialspace=True)
        frames.append(validate_reported(raw, source=path))
    frames = [f for f in frames if len(f)]
    if not frames:
        return _empty()
    return pd.concat(frames, ignore_index=True)

"""Tables: ``csv:PATH`` (also .tsv, .csv.gz) and ``parquet:PATH``, one row per example.

One column holds the label; the others are the features, which must be numbers (or
booleans). Tabular files are how most non-image datasets are kept, and the usual
mistakes in them are named here with their fix: a text column among the features, a
saved row index (``Unnamed: 0``), a label column that holds measurements rather than
classes.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from tailscope.data.dataset import DataError

LABEL_NAMES = ("label", "labels", "y", "target", "class")
# names of columns that usually number the rows: used as a feature they let a model learn the row order
_INDEX_LIKE = re.compile(r"^(unnamed: ?\d+|index|idx|id|uuid|no|nr|(.*[_ ])?(id|idx|nr))$", re.IGNORECASE)


def read_table(p: Path, decimal: str = ".", encoding: str = "utf-8"):
    """The file as a pandas DataFrame (parquet by its magic bytes, else delimited text).

    UTF-8 text may start with a byte-order mark (Excel's "CSV UTF-8"): it is dropped, not
    read into the first column's name.
    """
    import pandas as pd

    if not p.is_file():
        raise DataError(f"table file {p} does not exist; pass csv:PATH (or parquet:PATH) with the path of a "
                        "table file.")
    with open(p, "rb") as fh:
        kind = "parquet" if fh.read(4) == b"PAR1" else "csv"
    try:
        if kind == "parquet":
            return pd.read_parquet(p)
        enc = "utf-8-sig" if encoding.replace("_", "-").lower() in ("utf-8", "utf8") else encoding
        sep = "\t" if p.name.lower().endswith((".tsv", ".tsv.gz", ".tab")) else _sniff_separator(p, enc)
        # (pandas' fast reader when the separator is known; its python one sniffs, 10x slower)
        df = pd.read_csv(p, sep=sep, engine="python" if sep is None else "c", decimal=decimal, encoding=enc)
        if decimal == ",":
            df = _thousands_points(df)
        df.columns = [str(c).lstrip("\ufeff") for c in df.columns]  # a mark the python reader keeps
        return df
    except UnicodeDecodeError as e:
        raise DataError(f"{p} is not {encoding} text ({e.reason}); save it as UTF-8, or pass its "
                        "encoding (encoding=latin-1, --data-opt encoding=latin-1 for files from older Excel).") \
            from None
    except LookupError:
        raise DataError(f"encoding={encoding!r} is not a text encoding Python knows; use e.g. utf-8, latin-1 "
                        "or cp1252.") from None
    except (ValueError, OSError, ImportError) as e:
        hint = ("save it with DataFrame.to_parquet" if kind == "parquet"
                else "it must be text with a header row naming the columns")
        raise DataError(f"{p} could not be read as a {kind} file ({type(e).__name__}: {e}); {hint}.") from None


_GROUPED = r"\s*[-+]?\d{1,3}(\.\d{3})+(,\d+)?\s*"  # 1.065,5: points between thousands, a decimal comma
_PLAIN = r"\s*[-+]?\d+(,\d+)?\s*"


def _thousands_points(df):
    """Text columns of numbers written with points between thousands (1.065,5) as numbers.

    Only columns whose every value is such a number (or a plain one, 999,5) and some are
    grouped: pandas' own ``thousands="."`` drops any point, so dates (01.05.2020) and
    codes (1.1) would become integers.
    """
    import pandas as pd

    for c in df.columns:
        if pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]):
            continue
        text = df[c].dropna().astype(str)
        grouped = text.str.fullmatch(_GROUPED)
        if len(text) and grouped.any() and (grouped | text.str.fullmatch(_PLAIN)).all():
            df[c] = pd.to_numeric(df[c].astype("string").str.strip().str.replace(".", "", regex=False)
                                  .str.replace(",", ".", regex=False))
    return df


def _sniff_separator(p: Path, encoding: str) -> str | None:
    """The column separator of a text table (comma, semicolon, tab or bar), from its first
    64 KB; None where it cannot be told (pandas then sniffs the whole file)."""
    import csv
    import gzip

    name = p.name.lower()
    if name.endswith((".bz2", ".zip", ".xz", ".zst", ".tar")):
        return None
    try:
        with (gzip.open if name.endswith(".gz") else open)(p, "rt", encoding=encoding, errors="replace") as fh:
            sample = fh.read(1 << 16)
        return csv.Sniffer().sniff(sample[:sample.rfind("\n") + 1] or sample, delimiters=",;\t|").delimiter
    except (csv.Error, OSError, EOFError):
        return None


def _column_list(value, what: str) -> list[str]:
    """``"a,b"``, ``["a", "b"]`` or ``("a",)`` -> ``["a", "b"]`` (the CLI gives a string)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list | tuple) and all(isinstance(v, str | int) for v in value):
        return [str(v) for v in value]
    raise DataError(f"{what} must be column names, as a list or a comma-separated string "
                    f"(e.g. {what}=id,date), got {value!r}.")


def _find(df, name, what: str) -> str:
    cols = [str(c) for c in df.columns]
    if str(name) in cols:
        return str(name)
    raise DataError(f"the table has no column {name!r} ({what}); its columns are {_shown(cols)}.")


def _shown(cols: list[str], cap: int = 20) -> str:
    return ", ".join(cols[:cap]) + (f", ... ({len(cols)} in all)" if len(cols) > cap else "")


def pick_label(df, label) -> str:
    """The label column: ``label`` if given, else the one column named like a label."""
    if label is not None:
        return _find(df, label, "label")
    found = [str(c) for c in df.columns if str(c).strip().lower() in LABEL_NAMES]
    if len(found) == 1:
        return found[0]
    cols = [str(c) for c in df.columns]
    what = f"several label-like columns ({', '.join(found)})" if found else \
        f"no column named {', '.join(LABEL_NAMES)}"
    raise DataError(f"the table has {what}; name the label column with the option label=COLUMN "
                    f"(--data-opt label=COLUMN). Columns: {_shown(cols)}.")


def check_not_measurement(codes: np.ndarray, what: str) -> None:
    """Refuse integer labels that look like a measurement (a regression target): many distinct
    values, more than a quarter of them held by a single row. Class codes repeat;
    measurements rarely do. Only for a label column found by its name: one the user names
    (label=) is taken as classes."""
    uniq, counts = np.unique(codes, return_counts=True)
    if len(uniq) > max(MANY_CLASSES, len(codes) // 4) and np.mean(counts == 1) > 0.25:
        raise DataError(f"{what} holds {len(uniq)} different numbers over {len(codes)} rows ({np.mean(counts == 1):.0%} "
                        f"of them in a single row, from {uniq.min()} to {uniq.max()}): it looks like a measurement, "
                        "not class labels. Bin it into classes first (e.g. pd.cut(y, 5, labels=False)); if these are "
                        "classes, name the column (label=COLUMN) to take it as one.")


def _warn_near_names(values: np.ndarray, column) -> None:
    """Warn about class names that differ only in case or inner spaces ('Setosa', 'setosa'),
    and about classes of one row whose name is punctuation ('?', '-': a missing label)."""
    uniq, counts = np.unique(values, return_counts=True)
    folded: dict[str, list[str]] = {}
    for u in uniq.tolist():
        folded.setdefault(" ".join(u.lower().split()), []).append(u)
    near = [v for v in folded.values() if len(v) > 1]
    if near:
        warnings.warn(f"the label column {column!r} has class names that differ only in case or spacing "
                      f"({'; '.join(', '.join(repr(x) for x in v) for v in near[:3])}): each is a class of its own. "
                      "Make them one name first if they are one class.", stacklevel=5)
    marks = [u for u, c in zip(uniq.tolist(), counts.tolist(), strict=True)
             if not any(ch.isalnum() for ch in u) and (c == 1 or u in ("?", "", "-", "--", "."))]
    if marks:
        warnings.warn(f"the label column {column!r} has classes named {marks[:5]}: if they mark a missing label, drop "
                      "those rows (or fill in their labels) first.", stacklevel=5)


MANY_CLASSES = 50  # integer labels with more distinct values than this (and a quarter of rows) may be measurements


def label_values(column, named: bool = False) -> tuple[np.ndarray, list[str]]:
    """Labels as 0..C-1 and the class names, in sorted order of the values.

    Numbers keep numeric order (classes 1, 2, 10, not "1", "10", "2"), so a table's codes
    need not start at 0 or be contiguous; the names are the values as written.
    """
    import pandas as pd

    name = column.name
    if column.isna().any():
        rows = np.flatnonzero(column.isna().to_numpy())[:5].tolist()
        raise DataError(f"the label column {name!r} is empty in {int(column.isna().sum())} rows (first rows "
                        f"{rows}); drop those rows or fill in their labels.")
    if pd.api.types.is_bool_dtype(column):
        values = column.to_numpy().astype(np.int64)
    elif pd.api.types.is_numeric_dtype(column):
        v = column.to_numpy().astype(np.float64)
        if not np.all(np.isfinite(v)) or not np.all(v == np.round(v)):
            odd = [float(x) for x in np.unique(v) if not (np.isfinite(x) and x == round(x))][:5]
            raise DataError(f"the label column {name!r} holds non-integer numbers ({odd}); tailscope needs "
                            "class labels. If the column is a measurement, bin it into classes first "
                            "(e.g. pd.cut), or name the label column with label=COLUMN.")
        values = v.astype(np.int64)
        if not named:  # (a column the user named as the label is taken at its word: long tails are real)
            check_not_measurement(values, f"the label column {name!r}")
    else:
        values = column.astype(str).str.strip().to_numpy().astype(str)
        _warn_near_names(values, name)
    uniq, codes = np.unique(values, return_inverse=True)
    names = [str(bool(u)) if pd.api.types.is_bool_dtype(column) else str(u) for u in uniq]
    return codes.astype(np.int64), names


def _decimal_comma_hint(df, text: list[str], in_memory: bool) -> str:
    """A hint when text columns hold numbers written with decimal commas (``3,14``)."""
    sample = df[text[0]].dropna().astype(str).head(50)
    number = f"{_GROUPED}|{_PLAIN}"  # 3,14 or 1.065,5
    if len(sample) and sample.str.fullmatch(number).all() and sample.str.contains(",").any():
        return (" The values look like numbers with decimal commas (e.g. " + repr(sample[sample.str.contains(",")]
                .iloc[0].strip()) + "): " + ("convert them (s.str.replace(',', '.').astype(float))." if in_memory
                                             else "pass decimal=',' (--data-opt decimal=,)."))
    return ""


def warn_index_like(columns: list[str], source: str, fix: str = "drop={}", df=None) -> None:
    """Warn about feature columns that look like row numbers or ids: named so (a saved pandas
    index, ``id``, ``patient_id``) or, given the frame, integers that rise by one down the rows."""
    index_like = [c for c in columns if _INDEX_LIKE.match(c) or (df is not None and _counts_rows(df[c]))]
    if index_like:
        warnings.warn(f"{source}: column(s) {', '.join(index_like)} look like row numbers or ids but are used as "
                      "features; a model can learn the row order from them. Leave them out "
                      f"({fix.format(','.join(index_like))}) if they are not features.", stacklevel=5)


def _counts_rows(column) -> bool:
    """Whether a column numbers the rows: integers rising by exactly one from row to row."""
    import pandas as pd

    if len(column) < 3 or not pd.api.types.is_integer_dtype(column) or column.isna().any():
        return False
    return bool((np.diff(column.to_numpy(np.int64)) == 1).all())


def frames_as_arrays(x_train, x_test):
    """``from_arrays`` inputs that are DataFrames -> arrays, and the feature names (else None).

    The test frame's columns are matched to the training frame's by name (reordered; missing
    or extra ones refused). Frames of plain numeric columns convert as ``np.asarray`` always
    did; others (booleans, nullable integers, text) go through the table checks, which name
    any text column.
    """
    import pandas as pd

    if not isinstance(x_train, pd.DataFrame):
        return x_train, x_test, None
    names = [str(c) for c in x_train.columns]
    if len(set(names)) != len(names):
        raise DataError(f"x_train has several columns named {sorted({c for c in names if names.count(c) > 1})}; "
                        "give every column its own name.")
    frames = {"x_train": x_train.set_axis(names, axis=1)}
    if isinstance(x_test, pd.DataFrame):
        test_names = [str(c) for c in x_test.columns]
        missing, extra = [c for c in names if c not in test_names], [c for c in test_names if c not in names]
        if missing or extra:
            raise DataError(f"x_test's columns differ from x_train's (missing {missing[:5]}, extra {extra[:5]}); "
                            "give both the same feature columns, e.g. x_test[x_train.columns].")
        frames["x_test"] = x_test.set_axis(test_names, axis=1)[names]  # by name: the same order as training
    plain = all(isinstance(t, np.dtype) and t.kind in "iuf" for f in frames.values() for t in f.dtypes)
    if plain:
        warn_index_like(names, "x_train", fix="df.drop(columns=[...])", df=frames["x_train"])
    out = {k: f.to_numpy() if plain else feature_matrix(f, names, k, in_memory=True) for k, f in frames.items()}
    return out["x_train"], out.get("x_test", x_test), names


def feature_matrix(df, columns: list[str], source: str, in_memory: bool = False) -> np.ndarray:
    """The feature columns as one float array; DataError naming any text column."""
    import pandas as pd

    if not columns:
        raise DataError(f"{source} has no feature column left (only the label and split columns, or all "
                        "were dropped); the table needs at least one column of numbers besides the label.")
    text = [c for c in columns if not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]))]
    if text:
        fix = ("Leave them out (df.drop(columns=[...])), or encode them as numbers (e.g. pd.get_dummies(df, "
               "columns=[...]) for categories)." if in_memory else
               "Leave them out (drop=COLUMN,...), or encode them as numbers first (e.g. pd.get_dummies(df, "
               "columns=[...]) for categories) and save the table again.")
        raise DataError(f"{source}: column(s) {_shown(text, 10)} hold text, not numbers; tailscope needs numeric "
                        f"features. {fix}{_decimal_comma_hint(df, text, in_memory)}")
    warn_index_like(columns, source, fix="df.drop(columns=[...])" if in_memory else "drop={}", df=df)
    x = df[columns].to_numpy(dtype=np.float64, na_value=np.nan)
    # float32 holds every feature a model needs and halves the memory; keep float64 where it would round
    x32 = x.astype(np.float32)
    return x32 if np.array_equal(x32.astype(np.float64), x, equal_nan=True) else x


def _refuse_missing_cells(x: np.ndarray, features: list[str], source: str) -> None:
    """Name the columns and rows of empty feature cells (before the split makes them x_train's)."""
    empty = np.isnan(x) if x.dtype.kind == "f" else np.zeros(x.shape, bool)
    if not empty.any():
        return
    cols = [f"{features[c]} ({int(empty[:, c].sum())})" for c in np.flatnonzero(empty.any(0))]
    rows = np.flatnonzero(empty.any(1))
    raise DataError(f"{source} has empty feature cells in {len(rows)} rows (first rows {rows[:5].tolist()}, counted "
                    f"from 0 after the header), in column(s) {_shown(cols, 8)}. Fill or drop them first, leave those "
                    "columns out (drop=...), or accept them as missing values (allow_missing=true) with a learner that "
                    "handles them (-l forest on the command line).")


def load_table(path: str, *, label: str | None = None, drop=None, decimal: str = ".", encoding: str = "utf-8",
               split_key: str | None = "split", test_fraction: float | None = None,
               split_seed: int | None = None, allow_missing: bool = False):
    """``csv:PATH`` or ``parquet:PATH``: a table with one row per example.

    Parquet files are recognised by their content, anything else is read as delimited
    text with a header row (commas, semicolons or tabs; ``.gz`` and other compressions
    by their suffix).

    Parameters
    ----------
    label : str, optional
        The label column. Default: the one column named ``label``, ``labels``, ``y``,
        ``target`` or ``class`` (any case). Its values are class names (text) or class
        codes (integers, in any range: classes are their sorted values).
    drop : list of str or "a,b", optional
        Columns that are not features (ids, dates, free text). Every other column except
        the label and split columns is a feature and must hold numbers or booleans.
    decimal : "." or ","
        The decimal mark of numbers in a text file (``","``: ``3,14``, and points between
        thousands, ``1.065,5``; columns are then separated by semicolons or tabs).
    encoding : str
        The text encoding of a text file (default UTF-8, with or without Excel's byte-order
        mark; ``latin-1`` or ``cp1252`` for files from older Excel versions).
    split_key : str or None
        A column giving the train/test split, as in npz files (``0``/``"train"``/False
        for training rows, ``1``/``"test"``/True for test rows); used when present (the
        default name ``split`` in any case). ``None`` ignores it: it is then a feature
        like any other column unless dropped. Without it, a seeded stratified split is
        made (``test_fraction``, default 0.2, and ``split_seed``, default 0).
    allow_missing : bool
        Accept empty feature cells as missing values (see :func:`tailscope.from_arrays`).

    Feature names are kept (``Dataset.meta["feature_names"]``) and shown in the report.
    """
    # (imported here: the loaders module imports this one)
    from tailscope.data.loaders import _split_codes, _warn, from_arrays

    p = Path(path).expanduser()
    if decimal not in (".", ","):
        raise DataError(f"decimal must be '.' or ',' (the character before a number's fraction), got {decimal!r}.")
    if not isinstance(encoding, str):
        raise DataError(f"encoding must be the name of a text encoding (e.g. 'latin-1'), got {encoding!r}.")
    df = read_table(p, decimal, encoding)
    df.columns = [str(c).strip() for c in df.columns]
    if df.columns.duplicated().any():
        dup = sorted(set(df.columns[df.columns.duplicated()]))
        raise DataError(f"{p.name} has several columns named {dup}; give every column its own name.")
    if len(df) == 0:
        raise DataError(f"{p.name} has a header but no rows; it needs one row per example.")
    if split_key is not None and not isinstance(split_key, str):
        raise DataError(f"split_key must be the name of a column or None, got {split_key!r}.")
    label_col = pick_label(df, label)
    if split_key == "split" and "split" not in df.columns:  # the default name, in any case ("Split")
        split_key = next((c for c in df.columns if c.lower() == "split"), "split")
    has_split = split_key is not None and split_key in df.columns and split_key != label_col
    if split_key not in (None, "split") and not has_split:
        _find(df, split_key, "split_key")
    dropped = [_find(df, c, "drop") for c in _column_list(drop, "drop")]
    skip = {label_col, *dropped, *([split_key] if has_split else [])}
    features = [c for c in df.columns if c not in skip]
    named_split = [c for c in features if c.lower() == "split"]
    if split_key is None and named_split:
        _warn(f"{p.name}: split_key=None, so the column {named_split[0]!r} is a feature like any other; leave it out "
              f"with drop={named_split[0]} if it only marked the rows' split.")
    x = feature_matrix(df, features, p.name)
    if not allow_missing:
        _refuse_missing_cells(x, features, p.name)
    y, classes = label_values(df[label_col], named=label is not None)
    meta: dict = {"source": str(p), "feature_names": features, "label_column": label_col}
    name = p.name
    if has_split:
        if test_fraction is not None or split_seed is not None:
            _warn(f"{p.name}: test_fraction/split_seed are ignored because the column {split_key!r} gives "
                  "the split; pass split_key=None for a random stratified split.")
        codes = df[split_key].to_numpy()
        codes = codes.astype(str) if codes.dtype == object else codes  # (pandas keeps text as objects)
        try:
            is_test = _split_codes(codes, split_key, len(df), p)
        except DataError as e:  # its fix, split_key=None, would leave the column among the features
            raise DataError(f"{e} In a table, also leave the column out: split_key=None and drop={split_key}.") \
                from None
        if is_test.all() or not is_test.any():
            raise DataError(f"{p.name}: column {split_key!r} puts every row in the "
                            f"{'test' if is_test.all() else 'training'} split; it must mark some rows as train "
                            "and some as test, or pass split_key=None for a random stratified split.")
        meta["split"] = {"key": split_key, "n_train": int((~is_test).sum()), "n_test": int(is_test.sum())}
        meta["rows"] = {"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test)}
        return from_arrays(x[~is_test], y[~is_test], x[is_test], y[is_test], classes=classes, name=name,
                           meta=meta, allow_missing=allow_missing)
    tf = 0.2 if test_fraction is None else test_fraction
    seed = 0 if split_seed is None else split_seed
    meta.update(test_fraction=tf, split_seed=seed)
    return from_arrays(x, y, classes=classes, name=name, test_fraction=tf, split_seed=seed, meta=meta,
                       allow_missing=allow_missing)


"""The bad-input matrix: malformed files, absurd options and damaged model directories, for
every command. Each must exit 2 with one line on stderr naming the file and the place (row,
column, key or option) and no traceback; what is acceptable instead is read correctly."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_FLAGS

from rnnfc_cli import checkpoint, staging
from rnnfc_cli.cli import main

LONG_HEADER = "id,time,f0,f1,label\n"


def _long_rows(n: int = 8, label=lambda i: "up" if i % 2 else "down") -> str:
    """A valid long CSV body: n sequences of 3 steps with two features."""
    return "".join(f"s{i},{t},{t * 0.5},{i % 3},{label(i)}\n" for i in range(n) for t in range(3))


GOOD_LONG = LONG_HEADER + _long_rows()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _huge_npy() -> bytes:
    """A header that declares 4 TB of float32, followed by 16 bytes."""
    buffer = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + bytes(16)


def _huge_npz() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("X.npy", _huge_npy())
        archive.writestr("y.npy", _npy(np.array(["a", "b"])))
    return buffer.getvalue()


X = np.random.default_rng(0).normal(size=(8, 3, 2))
Y = np.array(["up", "down"] * 4)


def _with(array: np.ndarray, index, value) -> np.ndarray:
    out = array.copy()
    out[index] = value
    return out


# (case id, command line with {file}/{model}/{labels} placeholders, files, expected text)
# Files map a name to its bytes; the first one is {file}.
Case = tuple[str, list[str], dict[str, bytes], str]
DATA_CASES: list[Case] = [
    # --- encodings and framing
    (
        "utf16-no-bom",
        ["train", "{file}"],
        {"a.csv": GOOD_LONG.encode("utf-16-le")},
        "UTF-16 without",
    ),
    (
        "latin1",
        ["train", "{file}"],
        {"a.csv": (GOOD_LONG + "s9,0,1,2,café\n").encode("latin-1")},
        "row 26: not UTF-8",
    ),
    (
        "truncated-csv",
        ["train", "{file}"],
        {"a.csv": GOOD_LONG[:-9].encode()},
        "row 25: has 3 fields",
    ),
    (
        "gzip-named-csv",
        ["train", "{file}"],
        {"a.csv": gzip.compress(GOOD_LONG.encode())},
        "gzip-compressed",
    ),
    ("binary-csv", ["train", "{file}"], {"a.csv": b"id,x\n\x00\x01\x02"}, "NUL bytes"),
    # --- time features
    (
        "unreadable-timestamp",
        ["train", "{file}", "--time-features"],
        {"a.csv": GOOD_LONG.replace("s2,1,", "s2,tomorrow,", 1).encode()},
        "row 9, column 'time': 'tomorrow' is neither a number nor an ISO-8601 timestamp",
    ),
    (
        "numbers-and-timestamps",
        ["train", "{file}", "--time-features"],
        {"a.csv": GOOD_LONG.replace("s2,1,", "s2,2024-01-01,", 1).encode()},
        "row 9, column 'time': '2024-01-01' is a timestamp without a UTC offset, '0' (row 2) "
        "a number",
    ),
    (
        "time-features-of-npz",
        ["train", "{file}", "--time-features"],
        {"a.npz": _npz(X=np.zeros((4, 3, 1)), y=np.array([0, 1, 0, 1]))},
        "time features come from a long CSV's time column",
    ),
    ("empty", ["train", "{file}"], {"a.csv": b""}, "is empty"),
    ("header-only", ["train", "{file}"], {"a.csv": LONG_HEADER.encode()}, "no data rows"),
    # --- columns
    (
        "duplicate-columns",
        ["train", "{file}"],
        {"a.csv": b"label,t0,t0\na,1,2\n"},
        "'t0' appears twice",
    ),
    (
        "blank-column",
        ["train", "{file}"],
        {"a.csv": b"label,,t1\na,1,2\n"},
        "column 2 has a blank name",
    ),
    (
        "no-label-column",
        ["train", "{file}", "--label-col", "klass"],
        {"a.csv": GOOD_LONG.encode()},
        "no label column 'klass' (columns: id, time, f0, f1, label); name it with --label-col, "
        "e.g. --label-col label",
    ),
    ("no-features", ["train", "{file}"], {"a.csv": b"id,label\na,k\n"}, "no feature columns"),
    # --- cells
    (
        "empty-label",
        ["train", "{file}"],
        {"a.csv": (GOOD_LONG + "s9,0,1,2,\n").encode()},
        "row 26, column 'label': empty label",
    ),
    (
        "mixed-types",
        ["train", "{file}"],
        {"a.csv": (GOOD_LONG + "s9,0,one,2,up\n").encode()},
        "row 26, column 'f0': 'one' is not a number; feature columns hold numbers (if 'f0' "
        "holds categories, use --categorical f0; if it holds the class, add --label-col f0; "
        "else remove the column)",
    ),
    (
        "nan-cell",
        ["train", "{file}"],
        {"a.csv": (GOOD_LONG + "s9,0,nan,2,up\n").encode()},
        "row 26, column 'f0': nan",
    ),
    (
        "inf-cell",
        ["train", "{file}"],
        {"a.csv": (GOOD_LONG + "s9,0,1,inf,up\n").encode()},
        "row 26, column 'f1': inf",
    ),
    (
        "minus-inf-first-cell",
        ["train", "{file}"],
        {"a.csv": b"label,t0,t1\nup,-inf,1\ndown,1,2\n"},
        "row 2, column 't0': -inf",
    ),
    (
        "gap-in-wide-row",
        ["train", "{file}"],
        {"a.csv": b"label,t0,t1,t2\nup,1,,3\n"},
        "row 2, column 't1': empty cell inside",
    ),
    (
        "empty-id",
        ["train", "{file}"],
        {"a.csv": (GOOD_LONG + ",0,1,2,up\n").encode()},
        "row 26, column 'id': empty id",
    ),
    (
        "label-changes-in-sequence",
        ["train", "{file}"],
        {"a.csv": (GOOD_LONG + "s0,9,1,2,up\n").encode()},
        "label 'up' differs",
    ),
    (
        "one-class",
        ["train", "{file}"],
        {"a.csv": (LONG_HEADER + _long_rows(label=lambda i: "up")).encode()},
        "every sequence has label 'up'",
    ),
    (
        "too-few-sequences",
        ["train", "{file}"],
        {"a.csv": (LONG_HEADER + _long_rows(2)).encode()},
        "too few to hold out",
    ),
    # --- NumPy files
    (
        "npz-missing-X",
        ["train", "{file}"],
        {"a.npz": _npz(x=X, y=Y)},
        "no key 'X' (or 'tokens') (keys: x, y)",
    ),
    ("npz-missing-y", ["train", "{file}"], {"a.npz": _npz(X=X)}, "no key 'y'"),
    ("npz-truncated", ["train", "{file}"], {"a.npz": _npz(X=X, y=Y)[:300]}, "not a valid .npz"),
    (
        "npz-nan-inside",
        ["train", "{file}"],
        {"a.npz": _npz(X=_with(X, (2, 1, 0), np.nan), y=Y)},
        "X[2, 1, 0] is nan inside",
    ),
    (
        "npz-inf-last-step",
        ["train", "{file}"],
        {"a.npz": _npz(X=_with(X, (5, 2, 1), np.inf), y=Y)},
        "X[5, 2, 1] is inf",
    ),
    (
        "npz-all-nan-sequence",
        ["train", "{file}"],
        {"a.npz": _npz(X=_with(X, 3, np.nan), y=Y)},
        "X[3] is all NaN",
    ),
    (
        "npz-nan-label",
        ["train", "{file}"],
        {"a.npz": _npz(X=X, y=_with(np.arange(8.0) % 2, 4, np.nan))},
        "key 'y'",
    ),
    (
        "npz-labels-wrong-count",
        ["train", "{file}"],
        {"a.npz": _npz(X=X, y=Y[:5])},
        "8 sequences but key 'y' has shape (5,)",
    ),
    (
        "npz-bad-lengths",
        ["train", "{file}"],
        {"a.npz": _npz(X=X, y=Y, lengths=np.full(8, 9))},
        "lengths[0] is 9",
    ),
    (
        "npz-object-array",
        ["train", "{file}"],
        {"a.npz": _npz(X=X, y=np.array([{}] * 8, dtype=object))},
        "pickled",
    ),
    (
        "npz-terabyte-header",
        ["train", "{file}"],
        {"a.npz": _huge_npz()},
        "key 'X': the header declares shape (1000000, 1000000)",
    ),
    (
        "npz-string-X",
        ["train", "{file}"],
        {"a.npz": _npz(X=np.array([["a"]]), y=Y[:1])},
        "X has dtype <U1",
    ),
    (
        "npy-terabyte-header",
        ["predict", "{model}", "{file}"],
        {"a.npy": _huge_npy()},
        "declares shape (1000000, 1000000) of float32 (3.6 TiB)",
    ),
    (
        "npy-truncated",
        ["predict", "{model}", "{file}"],
        {"a.npy": _npy(X)[:-40]},
        "truncated or corrupt",
    ),
    (
        "npy-pickled",
        ["predict", "{model}", "{file}"],
        {"a.npy": _npy(np.array([None, 1], dtype=object))},
        "pickled",
    ),
    ("npy-is-a-zip", ["predict", "{model}", "{file}"], {"a.npy": _npz(X=X)}, "is an .npz archive"),
    ("npy-without-labels", ["train", "{file}"], {"a.npy": _npy(X)}, "--labels FILE"),
    (
        "npy-labels-wrong-count",
        ["train", "{file}", "--labels", "{labels}"],
        {"a.npy": _npy(X), "y.txt": b"up\ndown\nup\n"},
        "8 sequences but",
    ),
    (
        "unknown-format",
        ["train", "{file}"],
        {"a.parquet": b"PAR1"},
        "unknown format '.parquet': rnnfc reads .csv, .tsv, .txt, .npz and .npy files",
    ),
    ("missing-file", ["train", "{file}x"], {"a.csv": b""}, "a.csvx: no such file"),
    # --- eval and predict against the trained model (2 features, labels up/down)
    (
        "eval-unseen-labels",
        ["eval", "{model}", "{file}"],
        {"a.csv": (GOOD_LONG.replace(",up\n", ",sideways\n", 6)).encode()},
        "2 sequences have labels the model never saw: 'sideways'",
    ),
    ("eval-npz-without-labels", ["eval", "{model}", "{file}"], {"a.npz": _npz(X=X)}, "no key 'y'"),
    (
        "predict-wrong-feature-count",
        ["predict", "{model}", "{file}"],
        {"a.npz": _npz(X=X[:, :, :1])},
        "has 1 features per step; the model was trained on 2 (f0, f1): give it data with the "
        "same features",
    ),
    (
        "predict-renamed-features",
        ["predict", "{model}", "{file}"],
        {"a.csv": GOOD_LONG.replace("f1", "g1", 1).encode()},
        "missing feature column 'f1' that the model was trained on (columns: id, time, f0, g1",
    ),
    (
        "predict-100k-columns",
        ["predict", "{model}", "{file}"],
        {
            "a.csv": (
                "label,"
                + ",".join(f"t{i}" for i in range(100_000))
                + "\nup,"
                + ",".join(["1"] * 100_000)
                + "\n"
            ).encode()
        },
        "has 1 features per step",
    ),
]

OPTION_CASES: list[tuple[list[str], str]] = [
    (["--batch-size", "0"], "--batch-size"),
    (["--lr", "-1"], "--lr -1.0"),
    (["--epochs", "0"], "--epochs"),
    (["--hidden", str(10**9)], "--hidden"),
    (["--layers", "0", "--conv", "none"], "--layers"),
    (["--conv", "64:x"], "--conv"),
    (["--conv", "0:3"], "--conv"),
    (["--downsample", "0"], "--downsample"),
    (["--block-pool", "0"], "--block-pool"),
    (["--refit", "sometimes"], "--refit"),
    (["--branch-dropout", "1"], "--branch-dropout"),
    (["--dropout", "1.5"], "--dropout 1.5"),
    (["--seeds", "0"], "--seeds"),
    (["--val-split", "1.5"], "--val-split"),
    (["--patch", "x"], "--patch 'x'"),
    (["--features", "f0,,f1"], "--features 'f0,,f1': expected column names"),
    (["--ignore", "f*"], "--ignore f* leaves no value columns"),
    (["--pool", "last,avg"], "--pool 'avg'"),
    (["--cell", "transformer"], "--cell 'transformer'"),
    (["--dense", "12,x"], "--dense '12,x'"),
    (["--devices", "-1"], "--devices"),
    (["--checkpoint-every", "-1"], "--checkpoint-every"),
    (["--weight-decay", "nan"], "--weight-decay"),
    (["--label-smoothing", "1"], "--label-smoothing 1.0"),
    (["--monitor", "f1"], "--monitor 'f1'"),
    (["--pool", "mean,mean"], "each method at most once"),
    (["--normalize", "minmax"], "--normalize 'minmax'"),
    (["--class-weight", "auto"], "--class-weight 'auto'"),
    (["--augment", "warp"], "--augment 'warp'"),
    (["--augment", "crop:1.5"], "--augment 'crop:1.5'"),
    (["--config", "/nonexistent/train.toml"], "--config /nonexistent/train.toml: cannot read"),
]


def _write(root: Path, files: dict[str, bytes]) -> dict[str, str]:
    paths = {}
    for name, content in files.items():
        (root / name).write_bytes(content)
        paths[name] = str(root / name)
    return paths


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def _assert_one_clean_line(code: int, err: str, expected: str, *names: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert expected in err, err
    for name in names:
        assert name in err, f"{name} not named in: {err}"


@pytest.mark.parametrize(
    ("argv", "files", "expected"), [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES]
)
def test_bad_data(tmp_path, capsys, trained_model, argv, files, expected):
    paths = _write(tmp_path, files)
    first = next(iter(paths.values()))
    names = {"file": first, "model": str(trained_model), "labels": paths.get("y.txt", "")}
    args = [a.format(**names) for a in argv]
    if args[0] == "train":
        args += ["-m", str(tmp_path / "m"), *TINY_FLAGS]
    code, err = _run(capsys, args)
    _assert_one_clean_line(code, err, expected, Path(first).name)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(("flags", "expected"), OPTION_CASES, ids=[c[0][0] for c in OPTION_CASES])
def test_absurd_train_options(tmp_path, capsys, tiny_data, flags, expected):
    args = ["train", str(tiny_data["train_long"]), "-m", str(tmp_path / "m"), *TINY_FLAGS, *flags]
    code, err = _run(capsys, args)
    _assert_one_clean_line(code, err, expected)
    assert not (tmp_path / "m").exists()


def _edit_config(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(model_dir: Path) -> None:
        path = model_dir / checkpoint.CONFIG_FILE
        config = json.loads(path.read_text())
        edit(config)
        path.write_text(json.dumps(config))

    return damage


def _damage(name: str, content: bytes | None) -> Callable[[Path], None]:
    def damage(model_dir: Path) -> None:
        path = model_dir / name
        if content is None:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        else:
            path.write_bytes(content)

    return damage


def _lose_weights(model_dir: Path) -> None:
    shutil.rmtree(model_dir / checkpoint.CHECKPOINT_DIR)
    (model_dir / checkpoint.CHECKPOINT_DIR).mkdir()
    (model_dir / checkpoint.INFERENCE_PARAMS_FILE).write_bytes(b"\x00garbage")


FUTURE = json.dumps({"format_version": 99, "rnnfc_version": "9.0"}).encode()
# (case id, damage, expected text, the file at fault that the message must name)
MODEL_DIR_CASES = [
    (
        "missing-config",
        _damage(checkpoint.CONFIG_FILE, None),
        "not an rnnfc model directory",
        checkpoint.CONFIG_FILE,
    ),
    (
        "corrupted-config",
        _damage(checkpoint.CONFIG_FILE, b"{not json"),
        "unreadable",
        checkpoint.CONFIG_FILE,
    ),
    (
        "future-version",
        _damage(checkpoint.CONFIG_FILE, FUTURE),
        "format version 99",
        checkpoint.CONFIG_FILE,
    ),
    (
        "missing-summary",
        _damage(checkpoint.SUMMARY_FILE, None),
        "incomplete model directory",
        checkpoint.SUMMARY_FILE,
    ),
    (
        "corrupted-preprocessing",
        _damage(checkpoint.PREPROCESSING_FILE, b"[1, 2"),
        "unreadable",
        checkpoint.PREPROCESSING_FILE,
    ),
    (
        "preprocessing-of-wrong-shape",
        _damage(checkpoint.PREPROCESSING_FILE, b'{"labels": 3}'),
        "corrupted",
        checkpoint.PREPROCESSING_FILE,
    ),
    (
        "settings-of-wrong-shape",
        _damage(checkpoint.CONFIG_FILE, b'{"format_version": 1, "model": 3}'),
        "corrupted model settings",
        checkpoint.CONFIG_FILE,
    ),
    (
        "setting-out-of-range",
        _edit_config(lambda config: config["model"].update(dropout=5.0)),
        "corrupted model settings",
        checkpoint.CONFIG_FILE,
    ),
    ("no-weights", _lose_weights, "holds no checkpoint", checkpoint.CHECKPOINT_DIR),
]


@pytest.mark.parametrize("command", ["info", "eval", "predict"])
@pytest.mark.parametrize(
    ("damage", "expected", "at_fault"),
    [c[1:] for c in MODEL_DIR_CASES],
    ids=[c[0] for c in MODEL_DIR_CASES],
)
def test_damaged_model_directory(
    tmp_path, capsys, trained_model, tiny_data, command, damage, expected, at_fault
):
    model_dir = tmp_path / "model"
    shutil.copytree(trained_model, model_dir)
    damage(model_dir)
    args = [command, str(model_dir)] + ([] if command == "info" else [str(tiny_data["test_long"])])
    code, err = _run(capsys, args)
    _assert_one_clean_line(code, err, expected, str(model_dir), at_fault)


def test_missing_model_and_an_interrupted_run_are_told_apart(tmp_path, capsys):
    code, err = _run(capsys, ["info", str(tmp_path / "nope")])
    _assert_one_clean_line(code, err, "no such model directory", "nope")
    staging.staging_dir(tmp_path / "half").mkdir()
    code, err = _run(capsys, ["predict", str(tmp_path / "half"), "-"])
    _assert_one_clean_line(code, err, "an interrupted training run is saved", "half")


# --- what is acceptable instead of an error is read correctly --------------------------------

ACCEPTED = [
    ("utf8-bom", "\ufeff" + GOOD_LONG, "utf-8", ".csv"),
    ("crlf", GOOD_LONG.replace("\n", "\r\n"), "utf-8", ".csv"),
    ("utf16-with-bom", GOOD_LONG, "utf-16", ".csv"),
    ("tab-separated", GOOD_LONG.replace(",", "\t"), "utf-8", ".tsv"),
    ("padded-header-names", GOOD_LONG.replace("f0,f1", " f0 , f1 "), "utf-8", ".csv"),
]


@pytest.mark.parametrize(
    ("text", "encoding", "suffix"), [a[1:] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED]
)
def test_acceptable_variants_predict_like_the_plain_file(
    tmp_path, capsys, trained_model, text, encoding, suffix
):
    plain = tmp_path / "plain.csv"
    plain.write_text(GOOD_LONG)
    variant = tmp_path / f"variant{suffix}"
    variant.write_bytes(text.encode(encoding))
    outputs = []
    for path in (plain, variant):
        assert main(["predict", str(trained_model), str(path), "--proba"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]


def test_labels_written_as_floats_are_the_same_class_and_extra_npz_keys_are_ignored(
    tmp_path, capsys
):
    y = np.array([1, 2.0] * 4)
    (tmp_path / "a.npz").write_bytes(_npz(X=X, y=y, notes=np.array(["extra key"])))
    model_dir = tmp_path / "m"
    assert (
        main(
            [
                "train",
                str(tmp_path / "a.npz"),
                "-m",
                str(model_dir),
                *TINY_FLAGS,
                "--val-split",
                "0.5",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["info", str(model_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["labels"] == [1, 2]


def test_one_row_per_id_and_other_lengths_than_training_predict(tmp_path, capsys, trained_model):
    one_step = LONG_HEADER + "".join(f"s{i},0,{i},1,up\n" for i in range(5))
    long_steps = LONG_HEADER + "".join(f"s0,{t},{t},1,up\n" for t in range(300))
    for name, text, rows in (("one.csv", one_step, 5), ("long.csv", long_steps, 1)):
        (tmp_path / name).write_text(text)
        assert main(["predict", str(trained_model), str(tmp_path / name)]) == 0
        assert len(capsys.readouterr().out.splitlines()) == rows + 1

"""Choosing the CSV columns: --features and --ignore, kept in the model directory so that
eval and predict read later files (more columns, another order) the way training did."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from conftest import TINY_FLAGS, make_sequences, write_long_csv, write_wide_csv

from rnnfc_cli import readers
from rnnfc_cli.cli import main
from rnnfc_cli.errors import BadInputError
from rnnfc_cli.readers import csv_cache

# The column choice is what these tests train for, not the model: no conv front end, whose
# compile would triple their time.
TRAIN = [*TINY_FLAGS, "--conv", "none"]


def _rewrite(source, target, columns, extra=None):
    """``source`` (a CSV) with only ``columns``, in that order, plus ``extra`` columns
    (name -> value per row)."""
    extra = extra or {}
    with source.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*columns, *extra])
        for i, row in enumerate(rows):
            writer.writerow([*(row[c] for c in columns), *(value(i) for value in extra.values())])
    return target


def _messy(tmp_path, name="messy.csv"):
    """A long CSV as systems export it: text columns beside the features."""
    sequences, labels = make_sequences(24, seed=3, features=2)
    plain = write_long_csv(tmp_path / "plain.csv", sequences, labels)
    extra = {"user": lambda i: f"user {i % 5}", "meta_note": lambda i: "free text, quoted"}
    return _rewrite(plain, tmp_path / name, ["id", "time", "f0", "f1", "label"], extra), plain


def _values(data) -> np.ndarray:
    """The padded values, read whole (from the cache too)."""
    return np.asarray(data.inputs[: len(data)])


def _read(path, **options):
    return readers.read_sequences(str(path), readers.ReadOptions(**options))


@pytest.mark.parametrize("cached", [False, True])
def test_ignore_and_features_choose_the_columns(tmp_path, monkeypatch, cached):
    monkeypatch.setattr(csv_cache, "MIN_BYTES", 0 if cached else 2**62)
    monkeypatch.setenv("RNNFC_CACHE_DIR", str(tmp_path / "cache"))
    messy, plain = _messy(tmp_path)
    expected = _values(_read(plain))
    ignored = _read(messy, ignore=("user", "meta_*"))
    assert ignored.feature_names == ("f0", "f1")
    np.testing.assert_array_equal(_values(ignored), expected)
    chosen = _read(messy, features=("f1", "f*"))  # in the patterns' order, each column once
    assert chosen.feature_names == ("f1", "f0")
    np.testing.assert_array_equal(_values(chosen), expected[:, :, ::-1])
    # A pattern never picks the id, time or label column.
    assert _read(messy, features=("*",), ignore=("user", "meta_*")).feature_names == ("f0", "f1")


def test_a_wide_csv_model_reads_later_files_with_its_training_choice(tmp_path, capsys):
    sequences, labels = make_sequences(24, seed=1, features=1)
    plain = write_wide_csv(tmp_path / "w.csv", sequences, labels)
    with plain.open() as handle:
        header = next(csv.reader(handle))
    messy = _rewrite(plain, tmp_path / "m.csv", header, {"note": lambda i: f"n{i}"})
    np.testing.assert_array_equal(_read(messy, ignore=("note",)).inputs, _read(plain).inputs)
    model_dir = tmp_path / "model"
    assert main(["train", str(messy), "-m", str(model_dir), *TRAIN, "--ignore", "note"]) == 0
    capsys.readouterr()
    outputs = []
    for path in (messy, plain):  # the note column left out again, without the flag
        assert main(["predict", str(model_dir), str(path), "--proba"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"features": ("f9",)}, "no column matches --features 'f9' (columns: id, time"),
        ({"features": ("label",)}, "no column matches --features 'label'"),
        ({"ignore": ("f*", "user", "meta_*")}, "--ignore f*,user,meta_* leaves no value columns"),
    ],
)
def test_a_choice_that_cannot_be_met_names_the_file_and_the_pattern(tmp_path, options, message):
    messy, _ = _messy(tmp_path)
    with pytest.raises(BadInputError, match=message.replace("*", r"\*").replace("(", r"\(")):
        _read(messy, **options)


def test_names_with_glob_characters_are_matched_exactly_when_the_model_chooses(tmp_path):
    assert readers.exact_pattern("a[1]*?") == "a[[]1][*][?]"
    path = _events(tmp_path / "e.csv", [("a", 1, 1.0, "x")], header=("id", "time", "f*", "label"))
    options = {"features": (readers.exact_pattern("f?"),), "chosen_by": readers.MODEL_FEATURES}
    with pytest.raises(BadInputError, match=re.escape("missing feature column 'f?' that")):
        _read(path, **options)
    options["features"] = (readers.exact_pattern("f*"),)
    assert _read(path, **options).feature_names == ("f*",)


def test_train_on_an_export_and_predict_on_files_with_other_columns(tmp_path, capsys):
    messy, plain = _messy(tmp_path)
    model_dir = tmp_path / "m"
    args = ["train", str(messy), "-m", str(model_dir), *TRAIN, "--ignore", "user,meta_*"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["info", str(model_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["feature_names"] == ["f0", "f1"]
    assert info["columns"] == {"features": [], "ignore": ["user", "meta_*"], "derived": []}

    def predict(path, *flags):
        code = main(["predict", str(model_dir), str(path), "--proba", *flags])
        out, err = capsys.readouterr()
        return code, out, err

    code, expected, _ = predict(plain)
    assert code == 0
    # Other columns, in another order, and more of them: no flag needed.
    shuffled = _rewrite(
        messy,
        tmp_path / "s.csv",
        ["f1", "meta_note", "label", "id", "f0", "time", "user"],
        {"device": lambda i: "d7"},
    )
    assert predict(shuffled)[:2] == (0, expected)
    assert main(["eval", str(model_dir), str(shuffled), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 24
    # A feature the model needs is missing: one line naming it and the file.
    missing = _rewrite(messy, tmp_path / "x.csv", ["id", "time", "f0", "label"])
    code, _, err = predict(missing)
    assert code == 2
    assert err.strip().splitlines() == [
        f"rnnfc predict: error: {missing}: missing feature column 'f1' that the model was "
        "trained on (columns: id, time, f0, label)"
    ]


def test_column_choice_is_refused_for_files_without_column_names(tmp_path, capsys, tiny_data):
    code = main(["train", str(tiny_data["train_npz"]), "-m", str(tmp_path / "m"), "--ignore", "x"])
    assert code == 2
    assert "--features and --ignore choose CSV columns" in capsys.readouterr().err


def _events(path, rows, header=("id", "time", "f0", "label")):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_time_features_are_log_gaps_from_iso_timestamps_with_offsets(tmp_path):
    # Out of order in the file, and in two time zones: 10:00:00Z = 12:00:00+02:00.
    rows = [
        ("a", "2024-05-01T12:00:30+02:00", 2.0, "x"),
        ("a", "2024-05-01T10:00:00Z", 1.0, "x"),
        ("a", "2024-05-01T10:01:30+00:00", 3.0, "x"),
        ("b", "2024-05-02T00:00:00+05:00", 5.0, "y"),
    ]
    data = _read(_events(tmp_path / "e.csv", rows), time_features=("gap", "elapsed"))
    assert data.feature_names == ("f0", "time:gap", "time:elapsed")
    np.testing.assert_allclose(data.inputs[0, :, 0], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(data.inputs[0, :, 1], np.log1p([0.0, 30.0, 60.0]))
    np.testing.assert_allclose(data.inputs[0, :, 2], np.log1p([0.0, 30.0, 90.0]))
    assert data.inputs[1, 0].tolist() == [5.0, 0.0, 0.0]


def test_numeric_times_give_gaps_in_their_own_unit(tmp_path):
    rows = [("a", 10, 0.0, "x"), ("a", 13.5, 0.0, "x"), ("a", 12, 0.0, "x"), ("b", 1, 0.0, "y")]
    data = _read(_events(tmp_path / "e.csv", rows), time_features=("gap",))
    np.testing.assert_allclose(data.inputs[0, :, 1], np.log1p([0.0, 2.0, 1.5]))


@pytest.mark.parametrize(
    ("times", "message"),
    [
        (
            ["2024-05-01T10:00:00", "yesterday"],
            "row 3, column 'time': 'yesterday' is neither a number nor an ISO-8601 timestamp",
        ),
        (
            ["2024-05-01T10:00:00", "2024-05-01T10:00:05+01:00"],
            "row 3, column 'time': '2024-05-01T10:00:05+01:00' is a timestamp with a UTC "
            "offset, '2024-05-01T10:00:00' (row 2) a timestamp without a UTC offset",
        ),
        (
            ["3", "2024-05-01T10:00:00"],
            "row 3, column 'time': '2024-05-01T10:00:00' is a "
            "timestamp without a UTC offset, '3' (row 2) a number",
        ),
        (
            ["3", "nan"],
            "row 3, column 'time': 'nan' is neither a number nor",
        ),
    ],
)
def test_timestamps_that_cannot_be_read_name_the_row(tmp_path, times, message):
    rows = [("a", time, 1.0, "x") for time in times] + [("b", times[0], 1.0, "y")]
    path = _events(tmp_path / "e.csv", rows)
    with pytest.raises(BadInputError, match=re.escape(f"{path}: {message}")):
        _read(path, time_features=("gap",))


def test_time_features_need_a_long_csv_with_its_time_column(tmp_path, tiny_data):
    no_time = _events(tmp_path / "e.csv", [("a", 1.0, "x")], header=("id", "f0", "label"))
    with pytest.raises(BadInputError, match="needs the time column 'time'"):
        _read(no_time, time_features=("gap",))
    with pytest.raises(BadInputError, match="needs a long CSV"):
        _read(tiny_data["train_wide"], time_features=("gap",))
    with pytest.raises(BadInputError, match="an NPZ file has none"):
        _read(tiny_data["train_npz"], time_features=("gap",))


def test_a_model_with_time_features_derives_them_again_at_predict(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        start = np.datetime64("2024-05-01T00:00:00") + np.timedelta64(int(i * 3600), "s")
        gaps = rng.integers(1, 5, size=6) * (1 if i % 2 else 60)  # seconds or minutes apart
        for step, offset in enumerate(np.cumsum(gaps)):
            stamp = str(start + np.timedelta64(int(offset), "s")) + "+00:00"
            rows.append((f"s{i}", stamp, 1.0 + 0.01 * step, "fast" if i % 2 else "slow"))
    train = _events(tmp_path / "t.csv", rows)
    model_dir = tmp_path / "m"
    assert main(["train", str(train), "-m", str(model_dir), *TRAIN, "--time-features"]) == 0
    capsys.readouterr()
    assert main(["info", str(model_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["feature_names"] == ["f0", "time:gap"]
    assert info["columns"]["derived"] == ["time:gap"]
    outputs = []
    # The same events with an extra column, rows shuffled: the same features again.
    shuffled = [(*row, "note") for row in rows]
    rng.shuffle(shuffled)
    other = _events(tmp_path / "o.csv", shuffled, header=("id", "time", "f0", "label", "note"))
    for path in (train, other):
        assert main(["predict", str(model_dir), str(path), "--proba"]) == 0
        outputs.append(sorted(capsys.readouterr().out.splitlines()))
    assert outputs[0] == outputs[1]
    # A sequence predicted alone as within the file: its features are its own.
    alone = _events(tmp_path / "a.csv", [row for row in rows if row[0] == "s3"])
    assert main(["predict", str(model_dir), str(alone), "--proba"]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line in outputs[0]


def test_eval_and_predict_read_the_columns_the_training_named(tmp_path):
    """A model trained with --id-col/--label-col/--time-col reads the same columns again
    without the flags; a flag given still wins."""
    from typer.testing import CliRunner

    from rnnfc_cli.cli import app

    runner = CliRunner()
    sequences, labels = make_sequences(24, seed=3)
    plain = write_long_csv(tmp_path / "plain.csv", sequences, labels)
    lines = plain.read_text().splitlines()
    header = lines[0].replace("id", "session").replace("time", "ts").replace("label", "outcome")
    renamed = tmp_path / "renamed.csv"
    renamed.write_text("\n".join([header, *lines[1:]]) + "\n")
    flags = ["--id-col", "session", "--time-col", "ts", "--label-col", "outcome"]
    model = tmp_path / "m"
    trained = runner.invoke(app, ["train", str(renamed), "-m", str(model), *flags, *TINY_FLAGS])
    assert trained.exit_code == 0, trained.stderr
    scored = runner.invoke(app, ["eval", str(model), str(renamed), "--json"])
    assert scored.exit_code == 0, scored.stderr
    assert json.loads(scored.stdout)["n"] == 24
    predicted = runner.invoke(app, ["predict", str(model), str(renamed)])
    assert predicted.exit_code == 0 and predicted.stdout.splitlines()[1].startswith("s")
    # The original names, given as flags, read the original file.
    given = ["--id-col", "id", "--time-col", "time", "--label-col", "label", "--json"]
    again = runner.invoke(app, ["eval", str(model), str(plain), *given])
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["accuracy"] == json.loads(scored.stdout)["accuracy"]

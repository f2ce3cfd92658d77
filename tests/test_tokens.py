"""Sequences of categories and tokens: ``--categorical`` columns of a long CSV and a
``--tokens`` column of one sequence per row, through vocabularies kept in the model
directory and learned embeddings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import TINY_FLAGS
from typer.testing import CliRunner

from rnnfc_cli import api, preprocessing
from rnnfc_cli.cli import app
from rnnfc_cli.config import ModelConfig, embedding_size
from rnnfc_cli.inference import init_params, member_keys
from rnnfc_cli.models import build_model
from rnnfc_cli.readers import Categories

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _events(path: Path, sessions: int, seed: int, extra_token: str | None = None) -> Path:
    """A long CSV of sessions whose class says whether "buy" comes before "view"."""
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "time", "event", "dwell", "label"])
        for s in range(sessions):
            label = ("early", "late")[s % 2]
            steps = int(rng.integers(5, 12))
            events = list(rng.choice(["click", "scroll", "hover", ""], steps))
            first, second = sorted(rng.choice(steps, 2, replace=False))
            events[first], events[second] = ("buy", "view") if label == "early" else ("view", "buy")
            if extra_token is not None:
                events[-1] = extra_token
            for t, event in enumerate(events):
                writer.writerow([f"s{s}", t, event, round(float(rng.random()), 3), label])
    return path


@pytest.fixture(scope="module")
def event_model(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("events")
    data = _events(root / "train.csv", 40, seed=0)
    model = root / "model"
    # Per-sequence scaling with the scale kept: the numbers, their scale inputs and the
    # token ids side by side, the layout every test of this model checks (export,
    # attribution, the report); the numbers alone would be scaled per feature.
    flags = ["--categorical", "event", "--normalize", "sequence+scale", *TINY_FLAGS]
    result = invoke("train", data, "-m", model, *flags)
    assert result.exit_code == 0, result.stderr
    return model, data


def test_the_vocabulary_is_most_frequent_first_capped_and_counted_on_valid_steps():
    texts = np.array(["b", "a", "c", "d"])
    codes = np.array([[0, 0, 1, 1, 2, -1], [3, 0, 1, 2, 2, 2]], dtype=np.int32)
    lengths = np.array([5, 4])  # the second row's last two steps are padding (c, c)
    column = Categories("event", codes, texts)
    # counts over valid steps: b 3, a 3, c 2, d 1 (ties in text order); padding's c's
    # left out, else c would lead with 4
    assert preprocessing.build_vocabulary(column, lengths, 10, 1) == ("a", "b", "c", "d")
    assert preprocessing.build_vocabulary(column, lengths, 2, 1) == ("a", "b")
    assert preprocessing.build_vocabulary(column, lengths, 10, 2) == ("a", "b", "c")
    assert preprocessing.build_vocabulary(column, lengths, 10, 3) == ("a", "b")


def test_an_empty_cell_is_a_category_and_unseen_tokens_are_unknown(event_model, tmp_path):
    model, data = event_model
    vocabulary = json.loads((model / "preprocessing.json").read_text())["vocabularies"][0]
    assert "" in vocabulary and {"buy", "view"} <= set(vocabulary)
    unseen = _events(tmp_path / "unseen.csv", 10, seed=3, extra_token="checkout")
    report = json.loads(invoke("eval", model, unseen, "--json").stdout)
    rows = list(csv.DictReader(unseen.open()))
    assert report["unknown_token_rate"] == pytest.approx(10 / len(rows))
    seen = json.loads(invoke("eval", model, data, "--json").stdout)
    assert seen["unknown_token_rate"] == 0.0


def test_tokens_map_by_their_text_whatever_order_a_file_shows_them_in(event_model, tmp_path):
    """Each file numbers its tokens by first appearance; the model's vocabulary must
    translate them, so the same sessions in another row order get the same answers."""
    model, data = event_model
    rows = list(csv.reader(data.open()))
    header, body = rows[0], rows[1:]
    by_session: dict[str, list[list[str]]] = {}
    for row in body:
        by_session.setdefault(row[0], []).append(row)
    shuffled = tmp_path / "shuffled.csv"
    with shuffled.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for key in reversed(list(by_session)):  # sessions and their events reversed
            writer.writerows(reversed(by_session[key]))
    first = api.predict(model, str(data))
    second = api.predict(model, str(shuffled))
    order = [second.ids.index(i) for i in first.ids]
    np.testing.assert_allclose(second.proba[order], first.proba, atol=1e-6)


def test_embeddings_ignore_what_padding_holds():
    config = ModelConfig(
        num_features=3, num_classes=2, hidden=6, dense=(4,), conv="4:3", embeddings=((9, 3),)
    )
    model = build_model(config)
    params = init_params(model, member_keys(0, 1))
    p = jax.tree.map(lambda leaf: leaf[0], params)
    rng = np.random.default_rng(0)
    lengths = np.array([5, 3], dtype=np.int32)
    x = np.zeros((2, 5, 3), np.float32)
    x[..., :2] = rng.normal(size=(2, 5, 2))
    x[..., 2] = rng.integers(2, 9, size=(2, 5))
    x[1, 3:] = 0.0
    longer = np.concatenate([x, np.zeros((2, 4, 3), np.float32)], axis=1)
    longer[1, 3:, 2] = [7, 1e9, -5, np.nan, 3, 8]  # ids out of range, NaN
    longer[0, 5:, :2] = 50.0

    def logits(inputs):
        return model.apply({"params": p}, inputs, lengths, train=False)

    np.testing.assert_allclose(logits(longer), logits(x), atol=1e-5)


def test_a_token_column_trains_and_its_vocabulary_is_saved_and_shown(tmp_path):
    rng = np.random.default_rng(1)
    data = tmp_path / "dna.csv"
    with data.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["read", "label"])
        for i in range(40):
            label = ("a", "b")[i % 2]
            bases = "".join(rng.choice(list("ACGT"), int(rng.integers(12, 20))))
            writer.writerow([bases + ("GATTACA" if label == "a" else "ACATTAG"), label])
    model = tmp_path / "m"
    result = invoke(
        "train", data, "-m", model, "--tokens", "read", "--token-split", "char", *TINY_FLAGS
    )
    assert result.exit_code == 0, result.stderr
    info = json.loads(invoke("info", model, "--json").stdout)
    assert info["input_format"] == "token-csv"
    assert info["tokens"] == {
        "columns": ["read"],
        "vocabulary_sizes": [4],
        "embedding_sizes": [embedding_size(6)],
        "split": "char",
    }
    predicted = invoke("predict", model, data)
    assert predicted.exit_code == 0, predicted.stderr
    assert len(predicted.stdout.splitlines()) == 41


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "flags", "message"),
    [
        ("read,label\nACGT,a\n,b\n", ["--tokens", "read"], "row 3, column 'read': no tokens"),
        ("read,label\nACGT,a\n", ["--tokens", "seq"], "--tokens 'seq': no such column"),
        ("read,label\nACGT,a\n", ["--tokens", "label"], "--tokens 'label' is the label"),
        ("read,label\n3,a\n4.5,b\n", ["--tokens", "read"], "every cell holds one number"),
        ("t0,t1,label\n1,2,a\n", ["--categorical", "t0"], "--categorical names columns of a long"),
        ("id,e,label\n1,x,a\n", ["--categorical", "f"], "--categorical 'f': no such column"),
        ("id,e,label\n1,x,a\n", ["--categorical", "id"], "--categorical 'id': is the id"),
        ("id,e,label\n1,x,a\n", ["--token-split", "word"], "--token-split 'word'"),
        ("id,e,label\n1,x,a\n", ["--max-vocab", "0"], "--max-vocab 0"),
        (
            "read,label\n" + "ACGT,a\nTTAC,b\n" * 10,
            ["--tokens", "read", "--augment", "mixup"],
            "--augment mixup: not with --categorical or --tokens",
        ),
    ],
    ids=[
        "empty-tokens",
        "no-column",
        "label-column",
        "numeric-token-column",
        "categorical-wide",
        "categorical-missing",
        "categorical-reserved",
        "bad-split",
        "no-vocab",
        "mixup-of-ids",
    ],
)
def test_bad_token_input_is_one_line_and_exit_2(tmp_path, text, flags, message):
    data = _write(tmp_path / "data.csv", text)
    result = invoke("train", data, "-m", tmp_path / "m", *flags, *TINY_FLAGS)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "m").exists()


def test_tokens_from_a_numpy_file_are_refused_naming_the_flag(tiny_data, tmp_path):
    result = invoke("train", tiny_data["train_npz"], "-m", tmp_path / "m", "--categorical", "e")
    assert result.exit_code == 2
    assert "--categorical reads tokens from CSV columns" in result.stderr


def test_a_damaged_vocabulary_is_a_model_dir_error(event_model, tmp_path):
    model, data = event_model
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(model, damaged)
    prep = json.loads((damaged / "preprocessing.json").read_text())
    (damaged / "preprocessing.json").write_text(json.dumps({**prep, "vocabularies": 7}))
    result = invoke("predict", damaged, data)
    assert result.exit_code == 2
    assert "preprocessing.json: corrupted" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("ending", ["onnx", "stablehlo"])
@pytest.mark.parametrize("numbers", [True, False], ids=["tokens-and-numbers", "tokens-alone"])
def test_exported_token_models_give_predicts_probabilities(event_model, tmp_path, ending, numbers):
    """The artifact takes the raw numbers and the token ids the saved vocabularies give."""
    model, data = event_model
    if not numbers:
        data = _token_npz(tmp_path / "tokens.npz", seed=2)
        model = tmp_path / "m"
        assert invoke("train", data, "-m", model, *TINY_FLAGS).exit_code == 0
    artifact = tmp_path / f"m.{ending}"
    metadata = api.export_model(model, artifact)
    files = api.checkpoint.read_model_files(model)
    prep = files.preprocessing
    read = preprocessing.read_options(prep, api.readers.ReadOptions(require_labels=False))
    sequences = api.readers.read_sequences(str(data), read)
    ids = preprocessing.token_ids(prep, preprocessing.conform(prep, sequences))
    raw = preprocessing.conform(prep, sequences).inputs.astype(np.float32)
    lengths = sequences.lengths.astype(np.int32)
    vocabulary = metadata["vocabularies"][prep.categorical[0]]
    assert vocabulary == list(prep.vocabularies[0])
    feeds = {"inputs": raw, "lengths": lengths, "tokens": ids}
    if ending == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(artifact))
        names = [i.name for i in session.get_inputs()]
        assert names == (["inputs"] if numbers else []) + ["lengths", "tokens"]
        proba = session.run(None, {name: feeds[name] for name in names})[0]
    else:
        from jax import export

        exported = export.deserialize(bytearray(artifact.read_bytes()))
        proba = np.asarray(exported.call(raw, lengths, ids))
    expected = api.predict(model, str(data)).proba
    np.testing.assert_allclose(proba, expected, atol=1e-5)


def test_token_outputs_match_their_schemas_and_the_report_runs(event_model, tmp_path):
    from test_schemas import _validator

    model, data = event_model
    for name, args in (("info", ["info", model]), ("eval", ["eval", model, data])):
        document = json.loads(invoke(*args, "--json").stdout)
        assert not [e.message for e in _validator(name).iter_errors(document)]
    page = tmp_path / "report.html"
    result = invoke("report", model, "--data", data, "-o", page)
    assert result.exit_code == 0, result.stderr
    text = page.read_text()
    assert "<svg" in text and ">buy<" in text and ">view<" in text  # token strips


def test_attributions_go_to_numbers_and_add_up_and_tokens_get_occlusion(event_model):
    """Integrated gradients move the numeric features only (an id halfway between two
    ids means nothing): the token features get none from them, and completeness still
    holds; what tokens get is occlusion, the fall in log-probability without them."""
    from rnnfc_cli import attribution

    model_dir, data = event_model
    files, model, params = api.load_model(model_dir)
    sequences = api.readers.read_sequences(
        str(data), preprocessing.read_options(files.preprocessing, api.readers.ReadOptions())
    )
    inputs = preprocessing.transform_inputs(files.preprocessing, sequences)
    attribute = attribution.make_attribute_fn(model)
    values, change = attribute(params, inputs[0], int(sequences.lengths[0]), 0)
    values = np.asarray(values)
    assert values.shape[1] == 3  # dwell, its scale, the event id
    assert np.all(values[:, -1] == 0) and np.any(values[:, 0] != 0)
    assert values.sum() == pytest.approx(float(change), abs=2e-2)
    # What eval and the report get: one column per feature the user named, the scale
    # input's share added to its feature's, so they still add up.
    (named,) = api.score(model_dir, str(data)).attribute(np.array([0]), np.array([0]))
    length = int(sequences.lengths[0])
    assert named.shape == (length, 2)
    np.testing.assert_allclose(named[:, 0], values[:length, :2].sum(axis=1), rtol=1e-5, atol=1e-6)

    # What the report shows for tokens: occlusion, checked against the model run by hand.
    shown = attribution.attributions(model, params, inputs[:1], sequences.lengths[:1], [0])[0]
    np.testing.assert_allclose(shown[:, 0], values[:length, 0])  # numbers: the same IG
    step = int(np.argmax(np.abs(shown[:, -1])))
    occluded = np.array(inputs[:1])
    occluded[0, step, -1] = preprocessing.UNKNOWN_ID

    def log_proba(x):
        def member(p):
            logits = model.apply({"params": p}, x, sequences.lengths[:1], train=False)
            return jax.nn.softmax(logits)[0, 0]

        return float(np.log(np.mean(np.asarray(jax.vmap(member)(params)))))

    expected = log_proba(np.array(inputs[:1])) - log_proba(occluded)
    assert shown[step, -1] == pytest.approx(expected, abs=1e-4) and expected != 0


def _token_npz(path: Path, seed: int, **extra) -> Path:
    """Integer codes whose order decides the class: 21 then 22, or 22 then 21."""
    rng = np.random.default_rng(seed)
    n, steps = 24, 12
    tokens = rng.integers(0, 20, (n, steps))
    labels = np.array(["a", "b"] * (n // 2))
    lengths = rng.integers(6, steps + 1, n)
    for i in range(n):
        at = int(rng.integers(0, lengths[i] - 2))
        tokens[i, at : at + 2] = [21, 22] if labels[i] == "a" else [22, 21]
        tokens[i, lengths[i] :] = -1
    np.savez(path, tokens=tokens, y=labels, **extra)
    return path


def test_integer_tokens_in_an_npz_need_no_flag_and_pad_with_negative_codes(tmp_path):
    data = _token_npz(tmp_path / "train.npz", seed=0)
    model = tmp_path / "m"
    result = invoke("train", data, "-m", model, *TINY_FLAGS)
    assert result.exit_code == 0, result.stderr
    info = json.loads(invoke("info", model, "--json").stdout)
    assert info["tokens"]["columns"] == ["tokens"] and info["features"] == 0
    # The same sequences with their lengths given and other codes in the padding.
    with np.load(data) as saved:
        tokens, labels = saved["tokens"], saved["y"]
    lengths = (tokens >= 0).sum(axis=1)
    other = tmp_path / "other.npz"
    np.savez(other, tokens=np.where(tokens < 0, 99, tokens), y=labels, lengths=lengths)
    first, second = api.predict(model, str(data)), api.predict(model, str(other))
    np.testing.assert_allclose(first.proba, second.proba, atol=1e-6)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"tokens": np.ones((2, 3)), "y": np.array(["a", "b"])}, "expected integer codes"),
        (
            {"tokens": np.array([[1, -1, 2], [1, 2, 3]]), "y": np.array(["a", "b"])},
            "tokens[0, 1, 0] is -1 inside the sequence",
        ),
        (
            {"tokens": np.ones((2, 3), int), "X": np.ones((2, 4)), "y": np.array(["a", "b"])},
            "give both the same",
        ),
    ],
    ids=["float-codes", "negative-inside", "shapes-differ"],
)
def test_bad_npz_tokens_are_one_line_and_exit_2(tmp_path, arrays, message):
    data = tmp_path / "bad.npz"
    np.savez(data, **arrays)
    result = invoke("train", data, "-m", tmp_path / "m", *TINY_FLAGS)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_a_token_model_resumes_to_the_same_parameters(tmp_path):
    """Ctrl-C in the middle and ``--resume``: bit-identical to a run left alone, as with
    numbers (the vocabulary is fitted again from the same data)."""
    import threading

    from conftest import TINY_MODEL
    from test_resume import _params, _StopAt

    from rnnfc_cli.config import TrainConfig
    from rnnfc_cli.errors import TrainingInterruptedError

    data = _token_npz(tmp_path / "train.npz", seed=4)

    def request(model_dir, **kwargs):
        train = TrainConfig(epochs=3, batch_size=8, min_steps=0, val_split=0.25, refit="off")
        return api.TrainRequest(
            data=str(data), model_dir=model_dir, model_options=TINY_MODEL, train=train, **kwargs
        )

    api.train_model(request(tmp_path / "whole"))
    stop = threading.Event()
    with pytest.raises(TrainingInterruptedError):
        api.train_model(
            request(tmp_path / "m", stop=stop, checkpoint_every=0.0), _StopAt(stop, 2, 1)
        )
    summary = api.train_model(request(tmp_path / "m", resume=True))
    assert summary["resumed_from_epoch"] == 1
    same = jax.tree.map(np.array_equal, _params(tmp_path / "whole"), _params(tmp_path / "m"))
    assert all(jax.tree.leaves(same)) and "embed_0" in _params(tmp_path / "m")

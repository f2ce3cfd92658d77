"""``rnnfc export``: a StableHLO or ONNX artifact that gives ``rnnfc predict --proba``'s
probabilities from raw inputs, for any batch and length, without rnnfc or Flax."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_sequences, padded, save_random_model
from typer.testing import CliRunner

from rnnfc_cli import api
from rnnfc_cli.cli import app


def _exported_proba(artifact: Path, inputs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    from jax import export

    exported = export.deserialize(bytearray(artifact.read_bytes()))
    return np.asarray(exported.call(inputs.astype(np.float32), lengths.astype(np.int32)))


def _test_inputs(seed: int, n: int, features: int) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length sequences, NaN past each end (the artifact must ignore it)."""
    sequences, _ = make_sequences(n, seed=seed, features=features)
    return padded(sequences, fill=np.nan), np.array([len(s) for s in sequences])


@pytest.mark.parametrize(
    ("options", "normalize", "members"),
    [
        (  # averaged by 2 between the blocks over a symbolic number of steps
            {"hidden": 6, "dense": (5,), "conv": "4:3,3:3", "downsample": 4, "block_pool": 2},
            "sequence+scale",
            2,
        ),
        (
            {"hidden": 5, "dense": (4,), "cell": "gru", "pool": "mean,attention", "patch": 3},
            "feature",
            1,
        ),
    ],
    ids=["conv-bilstm-ensemble-per-sequence-with-scale", "gru-patched-per-feature"],
)
def test_the_artifact_gives_predicts_probabilities(tmp_path, options, normalize, members):
    sequences, labels = make_sequences(20, seed=4, features=3)
    train = tmp_path / "train.npz"
    np.savez(train, X=padded(sequences), y=np.array(labels))
    model_dir = tmp_path / "m"
    save_random_model(model_dir, str(train), options, normalize, members)
    artifact = tmp_path / "model.stablehlo"
    metadata = api.export_model(model_dir, artifact)

    inputs, lengths = _test_inputs(seed=5, n=7, features=3)
    test = tmp_path / "test.npz"
    np.savez(test, X=inputs, lengths=lengths)
    expected = api.predict(model_dir, str(test)).proba
    np.testing.assert_allclose(_exported_proba(artifact, inputs, lengths), expected, atol=1e-5)
    # Another batch size and another length: the same artifact, rows predicted alike.
    longer = np.concatenate([inputs[:3], np.full((3, 5, 3), 7.0)], axis=1)
    np.testing.assert_allclose(
        _exported_proba(artifact, longer, lengths[:3]), expected[:3], atol=1e-5
    )
    assert metadata["labels"] == api.describe(model_dir)["labels"]
    saved = json.loads((tmp_path / "model.stablehlo.json").read_text())
    assert saved == json.loads(json.dumps(metadata))
    assert saved["platforms"] == ["cpu", "cuda"]


_WITHOUT_RNNFC = """
import sys
sys.modules["rnnfc_cli"] = None  # any import of these fails
sys.modules["flax"] = None
import json
import numpy as np
from jax import export
artifact, inputs = sys.argv[1], np.load(sys.argv[2])
exported = export.deserialize(bytearray(open(artifact, "rb").read()))
proba = exported.call(inputs["X"].astype(np.float32), inputs["lengths"].astype(np.int32))
print(json.dumps(np.asarray(proba).tolist()))
"""


def _run_alone(script: str, artifact: Path, model_dir: Path, tmp_path: Path):
    """What ``script`` prints (JSON) for ``artifact`` on test inputs in a fresh process,
    and ``rnnfc predict --proba``'s probabilities for the same inputs."""
    inputs, lengths = _test_inputs(seed=6, n=5, features=2)
    test = tmp_path / "test.npz"
    np.savez(test, X=inputs, lengths=lengths)
    alone = subprocess.run(
        [sys.executable, "-c", script, str(artifact), str(test)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert alone.returncode == 0, alone.stderr[-2000:]
    return json.loads(alone.stdout), api.predict(model_dir, str(test)).proba


def test_the_command_writes_an_artifact_that_runs_without_rnnfc(trained_model, tiny_data, tmp_path):
    artifact = tmp_path / "tiny.stablehlo"
    result = CliRunner().invoke(app, ["export", str(trained_model), "-o", str(artifact)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(artifact)

    answer, expected = _run_alone(_WITHOUT_RNNFC, artifact, trained_model, tmp_path)
    np.testing.assert_allclose(np.array(answer), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "{tmp}/m.onnx", "--format", "tflite"], "--format 'tflite': choose one of"),
        (["-o", "{tmp}/m.bin"], "-o {tmp}/m.bin: cannot tell the format"),
        (["-o", "{tmp}/m.stablehlo", "--platforms", "cpu,gpu"], "--platforms 'gpu'"),
        (["-o", "{tmp}/m.stablehlo", "--platforms", ","], "--platforms ','"),
        (["-o", "{tmp}/no/such/dir/m.stablehlo"], "cannot write"),
    ],
    ids=["unknown-format", "unknown-ending", "platform", "no-platform", "unwritable"],
)
def test_what_cannot_be_exported_is_one_line_and_exit_2(trained_model, tmp_path, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    result = CliRunner().invoke(app, ["export", str(trained_model), *args])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and message.format(tmp=tmp_path) in result.stderr
    assert not list(tmp_path.glob("m.*"))


@pytest.mark.parametrize("ending", ["stablehlo", "onnx"])
def test_a_model_with_time_features_is_refused_not_exported_wrong(tmp_path, ending):
    """Its derived inputs (gaps between timestamps) are not in the graph: exit 2, no file."""
    sequences, labels = make_sequences(12, seed=7, features=2)
    train = tmp_path / "train.npz"
    np.savez(train, X=padded(sequences), y=np.array(labels))
    model_dir = tmp_path / "m"
    save_random_model(model_dir, str(train), {"hidden": 4, "dense": (4,)}, "feature", 1)
    preprocessing = model_dir / "preprocessing.json"
    saved = json.loads(preprocessing.read_text())
    preprocessing.write_text(json.dumps({**saved, "time_features": ["gap"]}))
    result = CliRunner().invoke(
        app, ["export", str(model_dir), "-o", str(tmp_path / f"m.{ending}")]
    )
    assert result.exit_code == 2
    assert "--time-features (gap)" in result.stderr and result.stderr.count("\n") == 1
    assert not list(tmp_path.glob("m.*"))


# --- ONNX ----------------------------------------------------------------------------------


def _onnx_proba(artifact: Path, inputs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(artifact))
    feeds = {"inputs": inputs.astype(np.float32), "lengths": lengths.astype(np.int32)}
    return session.run(["probabilities"], feeds)[0]


@pytest.mark.parametrize(
    ("options", "normalize", "members"),
    [
        (
            {"hidden": 6, "dense": (5,), "conv": "4:8,3:3", "downsample": 6, "block_pool": 2},
            "sequence+scale",
            2,
        ),
        ({"cell": "gru", "pool": "mean,attention", "patch": 3}, "feature", 1),
        ({"cell": "rnn", "pool": "max,last", "layers": 2, "layer_norm": True}, "sequence", 1),
        ({"bidirectional": False, "pool": "last", "patch": 2, "conv": "3:4"}, "feature", 3),
        ({"cell": "gru", "bidirectional": False, "pool": "max", "skip": False}, "feature", 1),
        # the maximum between the blocks, as models saved before the average
        (
            {"layers": 0, "conv": "5:3,3:3", "dense": (), "downsample": 2, "block_pool": 2}
            | {"block_pooling": "max"},
            "sequence",
            2,
        ),
    ],
    ids=[
        "conv-bilstm-ensemble-per-sequence-with-scale",
        "bigru-patched-attention",
        "rnn-two-layers-layer-norm",
        "lstm-one-way-patched-conv-ensemble",
        "gru-one-way-max-no-skip",
        "conv-only-max-between-blocks",
    ],
)
def test_the_onnx_graph_gives_predicts_probabilities(tmp_path, options, normalize, members):
    sequences, labels = make_sequences(20, seed=4, features=3, classes=("a", "b", "c"))
    train = tmp_path / "train.npz"
    np.savez(train, X=padded(sequences), y=np.array(labels))
    model_dir = tmp_path / "m"
    save_random_model(
        model_dir, str(train), {"hidden": 5, "dense": (4,), **options}, normalize, members
    )
    artifact = tmp_path / "model.onnx"
    metadata = api.export_model(model_dir, artifact)

    inputs, lengths = _test_inputs(seed=5, n=9, features=3)
    assert len(set(lengths.tolist())) > 2  # lengths vary, padding holds NaN
    test = tmp_path / "test.npz"
    np.savez(test, X=inputs, lengths=lengths)
    expected = api.predict(model_dir, str(test)).proba
    np.testing.assert_allclose(_onnx_proba(artifact, inputs, lengths), expected, atol=1e-5)
    # Another batch size and a longer time axis (padding of any value): rows alike.
    longer = np.concatenate([inputs[:4], np.full((4, 7, 3), -3.0)], axis=1)
    np.testing.assert_allclose(_onnx_proba(artifact, longer, lengths[:4]), expected[:4], atol=1e-5)
    one = _onnx_proba(artifact, inputs[1:2, : lengths[1]], lengths[1:2])  # unpadded, batch 1
    np.testing.assert_allclose(one, expected[1:2], atol=1e-5)
    assert metadata["labels"] == api.describe(model_dir)["labels"] == ["a", "b", "c"]


_ONNX_ALONE = """
import sys
for name in ("rnnfc_cli", "flax", "jax", "orbax"):
    sys.modules[name] = None  # any import of these fails
import json
import numpy as np
import onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1])
data = np.load(sys.argv[2])
feeds = {"inputs": data["X"].astype(np.float32), "lengths": data["lengths"].astype(np.int32)}
meta = session.get_modelmeta().custom_metadata_map
print(json.dumps({"proba": session.run(None, feeds)[0].tolist(), "meta": meta}))
"""


def test_the_command_writes_an_onnx_file_that_runs_with_onnxruntime_alone(trained_model, tmp_path):
    artifact = tmp_path / "tiny.onnx"
    result = CliRunner().invoke(app, ["export", str(trained_model), "-o", str(artifact), "--json"])
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["format"] == "onnx" and not (tmp_path / "tiny.onnx.json").exists()

    answer, expected = _run_alone(_ONNX_ALONE, artifact, trained_model, tmp_path)
    np.testing.assert_allclose(np.array(answer["proba"]), expected, atol=1e-5)
    meta = answer["meta"]
    description = api.describe(trained_model)
    assert json.loads(meta["labels"]) == description["labels"]
    assert json.loads(meta["feature_names"]) == description["feature_names"]
    assert meta["input_format"] == description["input_format"]
    assert meta["rnnfc_version"] == description["rnnfc_version"]
    # Every metadata entry round-trips: strings as they are, the rest as JSON.
    assert meta == {k: v if isinstance(v, str) else json.dumps(v) for k, v in printed.items()}


def test_a_bfloat16_model_is_refused_for_onnx_naming_the_option(tmp_path):
    sequences, labels = make_sequences(12, seed=7, features=2)
    train = tmp_path / "train.npz"
    np.savez(train, X=padded(sequences), y=np.array(labels))
    model_dir = tmp_path / "m"
    options = {"hidden": 4, "dense": (4,), "precision": "bf16"}
    save_random_model(model_dir, str(train), options, "feature", 1)
    result = CliRunner().invoke(app, ["export", str(model_dir), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert "--precision bf16" in result.stderr and result.stderr.count("\n") == 1
    assert not list(tmp_path.glob("m.*"))


def test_without_the_onnx_package_the_error_says_what_to_install(
    trained_model, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "onnx", None)
    result = CliRunner().invoke(app, ["export", str(trained_model), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1
    assert "pip install 'rnnfc[onnx]'" in result.stderr and result.stderr.count("\n") == 1
    assert not list(tmp_path.glob("m.*"))

"""A trained model as one file that runs without rnnfc: StableHLO (``jax.export``) or
ONNX (``onnx_graph``).

Either artifact computes everything between the raw values ``rnnfc predict`` reads and the
probabilities it prints: the model's input scaling, its masking of padded steps, the
network and the ensemble average. Batch and time are symbolic, so one artifact takes any
number of sequences of any length. ``jax.export.deserialize(data).call(inputs, lengths)``
runs the StableHLO with JAX alone (no rnnfc, no Flax), its metadata (labels in output
order, feature names, input format, versions) in a JSON file beside it; an ONNX runtime
runs the ONNX file, which holds the same metadata in its ``metadata_props``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rnnfc_cli import __version__
from rnnfc_cli.atomic import write_bytes_atomic
from rnnfc_cli.checkpoint import ModelFiles
from rnnfc_cli.errors import BadInputError, MissingExtraError
from rnnfc_cli.preprocessing import scale_block

FORMATS = ("stablehlo", "onnx")
# The file endings that choose a format when --format is not given.
EXTENSIONS = {".stablehlo": "stablehlo", ".onnx": "onnx"}


def metadata_path(path: Path) -> Path:
    """The JSON file beside an artifact: ``model.stablehlo`` -> ``model.stablehlo.json``."""
    return path.with_name(path.name + ".json")


def choose_format(path: Path, given: str | None) -> str:
    """The export format: ``given``, else the one ``path``'s ending names."""
    if given is None:
        given = EXTENSIONS.get(path.suffix.lower())
        if given is None:
            endings = ", ".join(EXTENSIONS)
            raise BadInputError(
                f"-o {path}: cannot tell the format from its ending ({endings}); add --format"
            )
    if given not in FORMATS:
        raise BadInputError(f"--format '{given}': choose one of {', '.join(FORMATS)}")
    return given


def probabilities_fn(files: ModelFiles, model: Any, params: Any):
    """``(raw inputs float32[b, t, f], lengths int32[b], token ids int32[b, t, c] for a
    model that reads tokens) -> float32[b, classes]``, the whole of
    ``rnnfc predict --proba`` for a batch, as one traceable function."""
    import jax
    import jax.numpy as jnp

    def probabilities(inputs, lengths, *tokens):
        lengths = lengths.astype(jnp.int32)
        scaled = scale_block(files.preprocessing, inputs.astype(jnp.float32), lengths, jnp)
        if tokens:  # ids as the model reads them: float features after the numbers
            scaled = jnp.concatenate([scaled, tokens[0].astype(jnp.float32)], axis=2)

        def member(p):
            logits = model.apply({"params": p}, scaled, lengths, train=False)
            return jax.nn.softmax(logits.astype(jnp.float32))

        return jax.vmap(member)(params).mean(axis=0)

    return probabilities


def check_exportable(files: ModelFiles, output_format: str) -> None:
    """Refuse, naming the option at fault, what an artifact would compute differently."""
    if prep_time_features := files.preprocessing.time_features:
        raise BadInputError(
            f"{files.path}: trained with --time-features ({', '.join(prep_time_features)}), "
            "which export does not derive yet; export a model trained without them"
        )
    if output_format == "onnx" and files.model.precision != "float32":
        raise BadInputError(
            f"{files.path}: trained with --precision {files.model.precision}, whose bfloat16 "
            "products ONNX runtimes would compute in float32 and answer differently; "
            "export it with --format stablehlo"
        )


def _metadata(files: ModelFiles, output_format: str) -> dict[str, Any]:
    """What every artifact says about itself: its inputs and outputs, the labels in output
    order, the features and the input format it expects, where it came from."""
    prep = files.preprocessing
    features = prep.num_features
    inputs = {
        "inputs": f"float32[batch, time, {features}]: raw values, as rnnfc predict reads "
        "them; steps past each length are ignored",
        "lengths": "int32[batch]",
    }
    if prep.categorical:
        inputs["tokens"] = (
            f"int32[batch, time, {len(prep.categorical)}]: each step's token id in the "
            "vocabulary of its column (vocabularies: token i has id i + 2; 1 is any other "
            "token, 0 padding)"
        )
        if output_format == "onnx" and not features:
            del inputs["inputs"]  # a model of tokens alone takes none
    return {
        "format": output_format,
        "inputs": inputs,
        "outputs": {"probabilities": f"float32[batch, {len(prep.labels)}]"},
        "labels": prep.output_labels,
        "feature_names": None if prep.feature_names is None else list(prep.feature_names),
        "input_format": prep.source_format,
        "normalize": prep.normalize,
        "vocabularies": None
        if not prep.categorical
        else dict(zip(prep.categorical, map(list, prep.vocabularies), strict=True)),
        "rnnfc_version": __version__,
        "model_id": files.summary.get("model_id"),
    }


def export_onnx(files: ModelFiles, params: Any, path: Path) -> dict[str, Any]:
    """Write the ONNX file to ``path``; returns the metadata it holds."""
    check_exportable(files, "onnx")
    try:
        import onnx
    except ImportError:
        raise MissingExtraError(
            "--format onnx builds the graph with the onnx package, which is not installed: "
            "pip install 'rnnfc[onnx]'"
        ) from None
    from rnnfc_cli import onnx_graph

    metadata = _metadata(files, "onnx")
    feeds = ", ".join(f"'{name}': {name}" for name in metadata["inputs"])
    metadata.update(
        opset=onnx_graph.OPSET,
        onnx_version=onnx.__version__,
        usage=f"onnxruntime.InferenceSession(FILE).run(None, {{{feeds}}})[0]",
    )
    model = onnx_graph.build(files.model, files.preprocessing, params, metadata)
    _write(path, model.SerializeToString())
    return metadata


def _write(path: Path, data: bytes) -> None:
    try:
        write_bytes_atomic(path, data)
    except OSError as err:  # whatever was at ``path`` is left as it was
        raise BadInputError(f"-o {path}: cannot write ({err.strerror or err})") from None


def export_stablehlo(
    files: ModelFiles, model: Any, params: Any, path: Path, platforms: tuple[str, ...]
) -> dict[str, Any]:
    """Write the artifact to ``path`` and its metadata beside it; returns the metadata."""
    check_exportable(files, "stablehlo")
    import jax
    import jax.numpy as jnp
    from jax import export

    batch, time = export.symbolic_shape("batch, time")
    prep = files.preprocessing
    shapes = [
        jax.ShapeDtypeStruct((batch, time, prep.num_features), jnp.float32),
        jax.ShapeDtypeStruct((batch,), jnp.int32),
    ]
    if prep.categorical:
        shapes.append(jax.ShapeDtypeStruct((batch, time, len(prep.categorical)), jnp.int32))
    exported = export.export(jax.jit(probabilities_fn(files, model, params)), platforms=platforms)(
        *shapes
    )
    metadata = _metadata(files, "stablehlo")
    arguments = ", ".join(metadata["inputs"])
    metadata.update(
        platforms=list(exported.platforms),
        jax_version=jax.__version__,
        calling_convention_version=exported.calling_convention_version,
        usage=f"jax.export.deserialize(open(FILE, 'rb').read()).call({arguments})",
    )
    text = json.dumps(metadata, indent=2) + "\n"
    _write(path, bytes(exported.serialize()))
    try:
        write_bytes_atomic(metadata_path(path), text.encode())
    except OSError as err:
        path.unlink(missing_ok=True)  # never an artifact without its labels
        where = metadata_path(path)
        raise BadInputError(f"-o {path}: cannot write {where} ({err.strerror or err})") from None
    return metadata

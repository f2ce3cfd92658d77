"""A trained model as one StableHLO artifact (``jax.export``) that runs without rnnfc.

The artifact computes everything between the raw values ``rnnfc predict`` reads and the
probabilities it prints: the model's input scaling, its masking of padded steps, the
network and the ensemble average. Batch and time are symbolic, so one artifact takes any
number of sequences of any length. ``jax.export.deserialize(data).call(inputs, lengths)``
runs it with JAX alone (no rnnfc, no Flax); the metadata (labels in output order, feature
names, input format, versions) goes in a JSON file beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rnnfc_cli import __version__
from rnnfc_cli.atomic import write_bytes_atomic
from rnnfc_cli.checkpoint import ModelFiles
from rnnfc_cli.errors import BadInputError
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
    if given == "onnx":
        raise BadInputError(
            "--format onnx: not available yet; --format stablehlo exports the same graph "
            "for JAX runtimes"
        )
    return given


def probabilities_fn(files: ModelFiles, model: Any, params: Any):
    """``(raw inputs float32[b, t, f], lengths int32[b]) -> float32[b, classes]``, the
    whole of ``rnnfc predict --proba`` for a batch, as one traceable function."""
    import jax
    import jax.numpy as jnp

    def probabilities(inputs, lengths):
        lengths = lengths.astype(jnp.int32)
        scaled = scale_block(files.preprocessing, inputs.astype(jnp.float32), lengths, jnp)

        def member(p):
            logits = model.apply({"params": p}, scaled, lengths, train=False)
            return jax.nn.softmax(logits.astype(jnp.float32))

        return jax.vmap(member)(params).mean(axis=0)

    return probabilities


def export_stablehlo(
    files: ModelFiles, model: Any, params: Any, path: Path, platforms: tuple[str, ...]
) -> dict[str, Any]:
    """Write the artifact to ``path`` and its metadata beside it; returns the metadata."""
    if prep_time_features := files.preprocessing.time_features:
        raise BadInputError(
            f"{files.path}: trained with --time-features ({', '.join(prep_time_features)}), "
            "which export does not derive yet; export a model trained without them"
        )
    import jax
    import jax.numpy as jnp
    from jax import export

    batch, time = export.symbolic_shape("batch, time")
    features = files.preprocessing.num_features
    exported = export.export(jax.jit(probabilities_fn(files, model, params)), platforms=platforms)(
        jax.ShapeDtypeStruct((batch, time, features), jnp.float32),
        jax.ShapeDtypeStruct((batch,), jnp.int32),
    )
    prep = files.preprocessing
    metadata = {
        "format": "stablehlo",
        "inputs": {
            "inputs": f"float32[batch, time, {features}]: raw values, as rnnfc predict reads "
            "them; steps past each length are ignored",
            "lengths": "int32[batch]",
        },
        "outputs": {"probabilities": f"float32[batch, {len(prep.labels)}]"},
        "labels": prep.output_labels,
        "feature_names": None if prep.feature_names is None else list(prep.feature_names),
        "input_format": prep.source_format,
        "normalize": prep.normalize,
        "platforms": list(exported.platforms),
        "rnnfc_version": __version__,
        "jax_version": jax.__version__,
        "calling_convention_version": exported.calling_convention_version,
        "model_id": files.summary.get("model_id"),
        "usage": "jax.export.deserialize(open(FILE, 'rb').read()).call(inputs, lengths)",
    }
    text = json.dumps(metadata, indent=2) + "\n"
    try:
        write_bytes_atomic(path, bytes(exported.serialize()))
    except OSError as err:  # whatever was at ``path`` is left as it was
        raise BadInputError(f"-o {path}: cannot write ({err.strerror or err})") from None
    try:
        write_bytes_atomic(metadata_path(path), text.encode())
    except OSError as err:
        path.unlink(missing_ok=True)  # never an artifact without its labels
        where = metadata_path(path)
        raise BadInputError(f"-o {path}: cannot write {where} ({err.strerror or err})") from None
    return metadata

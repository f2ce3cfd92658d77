"""The --json outputs follow the JSON Schemas in schemas/, the documented public contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from test_cli import TINY_FLAGS, invoke

SCHEMAS = Path(__file__).parent.parent / "schemas"


def _validator(name: str) -> Draft202012Validator:
    schemas = {p.name: json.loads(p.read_text()) for p in SCHEMAS.glob("*.schema.json")}
    registry = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values()
    )
    schema = schemas[f"{name}.schema.json"]
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=registry)


@pytest.fixture(scope="module")
def outputs(tiny_data, trained_model, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("schema") / "m"
    train = invoke("train", tiny_data["train_wide"], "-m", model_dir, *TINY_FLAGS, "--json")
    predict = invoke(
        "predict", trained_model, tiny_data["test_long"], "--format", "jsonl", "--proba"
    )
    artifact = tmp_path_factory.mktemp("export") / "m.stablehlo"
    exported = invoke("export", trained_model, "-o", artifact, "--json", "-q")
    onnx_file = artifact.with_suffix(".onnx")
    onnx_exported = invoke("export", trained_model, "-o", onnx_file, "--json", "-q")
    return {
        "export": [
            json.loads(exported.stdout),
            json.loads(Path(f"{artifact}.json").read_text()),
            json.loads(onnx_exported.stdout),
        ],
        "train": [json.loads(train.stdout)],
        "eval": [
            json.loads(invoke("eval", trained_model, tiny_data["test_long"], "--json").stdout)
        ],
        "info": [json.loads(invoke("info", model_dir, "--json").stdout)],
        "predict": [json.loads(line) for line in predict.stdout.splitlines()],
    }


@pytest.mark.parametrize("name", ["train", "eval", "info", "predict", "export"])
def test_json_output_matches_its_schema(outputs, name):
    validator = _validator(name)
    assert outputs[name]
    for document in outputs[name]:
        errors = [e.message for e in validator.iter_errors(document)]
        assert not errors, errors


def test_schemas_reject_what_they_should(outputs):
    assert not _validator("predict").is_valid({"id": 1})
    assert not _validator("eval").is_valid({"accuracy": 1.5})
    stablehlo, _, onnx = outputs["export"]
    assert not _validator("export").is_valid({**onnx, "format": "stablehlo"})
    assert not _validator("export").is_valid({**stablehlo, "format": "onnx"})


def test_info_schema_checks_the_embedded_training_summary(outputs):
    info = dict(outputs["info"][0])
    assert _validator("info").is_valid(info)
    info["summary"] = {k: v for k, v in info["summary"].items() if k != "best_epoch"}
    assert not _validator("info").is_valid(info)

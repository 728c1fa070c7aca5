"""`commsim trace ...` commands, and the exported JSON Schema checked against the example traces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from commsim.cli import main
from commsim.errors import ConfigError
from commsim.workloads import (
    dump_trace,
    import_chakra,
    inference_trace,
    load_trace,
    parse_trace,
    trace_json_schema,
    training_trace,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "workloads" / "examples"
CHAKRA_FILES = [EXAMPLES / "chakra" / f"pipeline_pair.{rank}.json" for rank in (0, 1)]


# ----------------------------------------------------------------------------- a small JSON Schema checker

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def schema_errors(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str = "$") -> list[str]:
    """The JSON Schema keywords pydantic emits (draft 2020-12 subset): where ``value`` breaks ``schema``."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return schema_errors(value, root["$defs"][name], root, path)
    errors: list[str] = []
    if "anyOf" in schema and all(schema_errors(value, s, root, path) for s in schema["anyOf"]):
        errors.append(f"{path}: matches none of anyOf")
    if "discriminator" in schema and isinstance(value, dict):   # pydantic's tagged union: check the named branch
        tag = value.get(schema["discriminator"]["propertyName"])
        target = schema["discriminator"]["mapping"].get(tag)
        if target is None:
            return [f"{path}: unknown {schema['discriminator']['propertyName']} {tag!r}"]
        return schema_errors(value, {"$ref": target}, root, path)
    if "oneOf" in schema:
        matches = sum(not schema_errors(value, s, root, path) for s in schema["oneOf"])
        if matches != 1:
            errors.append(f"{path}: matches {matches} of oneOf")
    for sub in schema.get("allOf", []):
        errors += schema_errors(value, sub, root, path)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            return [*errors, f"{path}: {value!r} is not of type {types}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{path}: {value} <= exclusiveMinimum")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > maximum")
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        errors.append(f"{path}: shorter than minLength")
    if isinstance(value, list):
        for i, item in enumerate(value):
            if "items" in schema:
                errors += schema_errors(item, schema["items"], root, f"{path}[{i}]")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing required {key!r}")
        for key, item in value.items():
            if key in properties:
                errors += schema_errors(item, properties[key], root, f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected property {key!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += schema_errors(item, schema["additionalProperties"], root, f"{path}.{key}")
    return errors


def example_traces() -> dict[str, dict[str, Any]]:
    return {
        "hand_written": json.loads((EXAMPLES / "hand_written.json").read_text()),
        "chakra": dump_trace(import_chakra(CHAKRA_FILES)),
        "training": dump_trace(training_trace("llama-2-7b", tp=2, pp=2, dp=2, seq_len=64, sequence_parallel=True)),
        "inference": dump_trace(inference_trace("llama-3.1-8b", tp=4, prompt_len=16, decode_steps=2)),
    }


def test_schema_is_json_schema_and_examples_conform():
    schema = trace_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["$defs"]) >= {"ComputeOp", "CollectiveOp", "SendOp", "RecvOp", "AllocOp", "FreeOp",
                                    "DiskReadOp", "DelayOp", "Program"}
    assert all(schema["$defs"][name].get("additionalProperties") is False for name in ("ComputeOp", "Program"))
    json.dumps(schema)
    for name, data in example_traces().items():
        assert schema_errors(data, schema, schema) == [], name
        parse_trace(data)                       # pydantic's own validation agrees


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: d["programs"][0]["ops"][0].update(flopz=1), "unexpected property 'flopz'"),
    (lambda d: d["programs"][0]["ops"][0].update(kind="matmul"), "unknown kind 'matmul'"),
    (lambda d: d.update(ranks="two"), "is not of type ['integer']"),
    # -3 is neither a number >= 0 nor a string with a unit
    (lambda d: d["programs"][0]["ops"][2].update(bytes=-3), "bytes: matches none of anyOf"),
])
def test_schema_rejects_what_the_models_reject(mutate, expected):
    schema = trace_json_schema()
    data = json.loads((EXAMPLES / "hand_written.json").read_text())
    mutate(data)
    errors = schema_errors(data, schema, schema)
    assert any(expected in e for e in errors), errors
    with pytest.raises(ConfigError):
        parse_trace(data)


# ----------------------------------------------------------------------------- the CLI


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out = capsys.readouterr()
    return info.value.code or 0, out.out, out.err


def test_schema_command(capsys, tmp_path):
    code, out, _ = run(capsys, "trace", "schema")
    assert code == 0 and json.loads(out) == trace_json_schema()
    code, _, _ = run(capsys, "trace", "schema", "-o", str(tmp_path / "s.json"))
    assert code == 0 and json.loads((tmp_path / "s.json").read_text())["title"] == "Trace"


def test_generate_and_validate_commands(capsys, tmp_path):
    path = tmp_path / "t.json"
    code, out, _ = run(capsys, "trace", "generate", "llama-2-7b", "--tp", "2", "--pp", "2", "--dp", "2",
                       "--seq-len", "128", "--micro-batches", "3", "-o", str(path))
    assert code == 0 and "wrote" in out
    trace = load_trace(path)
    assert trace.ranks == 8 and trace.metadata["micro_batches"] == 3
    code, out, _ = run(capsys, "trace", "validate", str(path), "--devices", "8")
    assert code == 0 and "valid" in out and "stage1" in out
    code, _, err = run(capsys, "trace", "validate", str(path), "--devices", "4")
    assert code == 2 and "uses rank 4, but the topology has only 4 devices" in err
    code, _, _ = run(capsys, "trace", "generate", "llama-2-7b", "--mode", "inference", "--tp", "4",
                     "--prompt-len", "32", "--decode-steps", "2", "-o", str(tmp_path / "i.json"))
    assert code == 0 and load_trace(tmp_path / "i.json").ranks == 4


def test_generate_with_the_megatron_features(capsys, tmp_path):
    path = tmp_path / "m.json"
    code, out, _ = run(capsys, "trace", "generate", "llama-2-7b", "--pp", "2", "--dp", "4", "--cp", "2",
                       "--virtual-stages", "2", "--micro-batches", "4", "--recompute", "full", "--zero-stage", "1",
                       "--experts", "4", "--ep", "2", "--top-k", "1", "--seq-len", "64", "-o", str(path))
    assert code == 0 and "wrote" in out
    trace = load_trace(path)
    assert trace.ranks == 16 and set(trace.communicators) == {"tp", "cp", "dp", "ep", "edp", "pp"}   # untied: no embd
    config = trace.metadata["config"]
    assert (config["recompute"], config["virtual_pipeline_stages"], config["zero_stage"]) == ("full", 2, 1)
    code, _, err = run(capsys, "trace", "generate", "llama-2-7b", "--pp", "2", "--virtual-stages", "3",
                       "-o", str(path))
    assert code == 2 and "virtual_pipeline_stages = 3: with pp=2 needs the 32 layers" in err


def test_generate_errors_exit_2(capsys, tmp_path):
    code, _, err = run(capsys, "trace", "generate", "t-nlg-17b", "--tp", "8", "-o", str(tmp_path / "x.json"))
    assert code == 2 and "tp = 8: does not divide the number of attention heads (28)" in err
    code, _, _ = run(capsys, "trace", "generate", "t-nlg-17b", "--tp", "8", "--loose-heads", "--seq-len", "64",
                     "-o", str(tmp_path / "x.json"))
    assert code == 0
    code, _, err = run(capsys, "trace", "generate", "nope", "-o", str(tmp_path / "x.json"))
    assert code == 2 and "is not in the model catalog" in err


def test_import_chakra_command(capsys, tmp_path):
    out_path = tmp_path / "c.json"
    groups = tmp_path / "pg.yaml"
    groups.write_text("world: [0, 1]\n")
    code, out, _ = run(capsys, "trace", "import-chakra", *map(str, CHAKRA_FILES), "-o", str(out_path),
                       "--process-groups", str(groups))
    assert code == 0 and "rank1" in out
    assert load_trace(out_path).programs[1].ops[1].kind == "recv"
    code, _, err = run(capsys, "trace", "import-chakra", str(CHAKRA_FILES[0]), "-o", str(out_path))
    assert code == 2 and "programs[0].ops[2].peer = 1: is outside the trace's ranks 0..0" in err
    code, _, err = run(capsys, "trace", "validate", str(tmp_path / "missing.json"))
    assert code == 2 and "does not exist" in err

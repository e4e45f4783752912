"""The target file's reference (docs/configuration.md) and JSON Schema (docs/target.schema.json) are what
harness/config_doc.py generates from the model; its table of which fields each trap reports is complete and true; the
schema accepts every shipped target and refuses what validation refuses by shape."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import config_doc, traps
from harness.config import CONFIGS, ROOT

SCHEMA = json.loads((ROOT / config_doc.SCHEMA_FILE).read_text())
TRAP_TESTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests/unit").glob("test_traps*.py"))


def test_the_committed_reference_is_generated():
    assert (ROOT / config_doc.DOC_FILE).read_text() == config_doc.markdown(), (
        f"{config_doc.DOC_FILE} is not what harness/config_doc.py generates: "
        f"python -m harness.config_doc > {config_doc.DOC_FILE}")


def test_the_committed_schema_is_generated():
    assert (ROOT / config_doc.SCHEMA_FILE).read_text() == config_doc.schema_text(), (
        f"{config_doc.SCHEMA_FILE} is not what harness/config_doc.py generates: "
        f"python -m harness.config_doc --schema > {config_doc.SCHEMA_FILE}")


def test_every_trap_has_its_fields_listed():
    named = [f.__name__ for f in traps.TRAPS]
    missing = [n for n in named if not config_doc.TRAP_FIELDS.get(n)]
    extra = sorted(set(config_doc.TRAP_FIELDS) - set(named))
    assert not missing and not extra, (f"harness/config_doc.py TRAP_FIELDS: add the fields that {missing} report, "
                                       f"remove {extra}")


def test_every_listed_path_is_a_field_of_the_model():
    bad = [(trap, p) for trap, paths in config_doc.TRAP_FIELDS.items() for p in paths if config_doc.field_of(p) is None]
    assert bad == []
    # the negative controls of field_of: a misspelt field, an item of a non-list, a key of a non-mapping, a flag
    # after a field that is not args
    for p in ("instances[].prot", "container[].image", "instances[].port.x", "instances[].env --dtype"):
        assert config_doc.field_of(p) is None, p
    assert config_doc.field_of("instances[].args --dtype")[1:] == ("args", "--dtype")


def _listed(trap: str, reported: str) -> bool:
    """Whether a field a trap reported ('instances[1].args --dtype', 'nodes[1].npu.emulator.devices.5.ip') is one its
    TRAP_FIELDS entry lists, or inside one."""
    r = re.sub(r"\[\d+\]", "[]", reported)
    return any(r == p or r.startswith((p + ".", p + "[", p + " ")) for p in config_doc.TRAP_FIELDS.get(trap, ()))


def test_every_field_a_trap_reports_in_its_unit_tests_is_listed(tmp_path):
    """Runs the traps' own unit tests (tests/unit/test_traps*.py) with a recorder of every problem's field."""
    out = tmp_path / "fields.json"
    env = {**os.environ, "KVPOOL_TRAP_FIELDS_OUT": str(out)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                          "tests.unit.trap_recorder", *TRAP_TESTS], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.exists(), run.stdout[-2000:] + run.stderr[-2000:]
    reported = json.loads(out.read_text())
    assert set(reported) == {f.__name__ for f in traps.TRAPS}, "a trap no unit test makes report a problem"
    unlisted = {trap: [f for f in fields if not _listed(trap, f)] for trap, fields in reported.items()}
    unlisted = {k: v for k, v in unlisted.items() if v}
    assert unlisted == {}, ("these traps report fields that harness/config_doc.py TRAP_FIELDS does not list for them; "
                            "add them, then python -m harness.config_doc > docs/configuration.md")
    assert not _listed("ports_unique", "instances[1].name")  # the check's negative control


# A JSON Schema checker of the keywords docs/target.schema.json uses; any other keyword is refused, so none is skipped.
KNOWN = {"$schema", "$defs", "$ref", "title", "description", "default", "type", "properties", "required",
         "additionalProperties", "items", "anyOf", "enum", "const", "pattern", "minimum", "maximum", "exclusiveMinimum",
         "minItems", "if", "then", "else"}
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def violations(value, node: dict, where: str = "$") -> list[str]:
    assert not set(node) - KNOWN, f"{where}: this checker does not know {set(node) - KNOWN}"
    if "$ref" in node:
        return violations(value, SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]], where)
    if "if" in node:
        branch = node["then"] if not violations(value, node["if"], where) else node["else"]
        return violations(value, branch, where)
    if "anyOf" in node:
        return [] if any(not violations(value, n, where) for n in node["anyOf"]) else [f"{where}: no anyOf fits"]
    t = node.get("type")
    if t in ("number", "integer"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (t == "number" or
                                                                                  isinstance(value, int))
    else:
        ok = t is None or isinstance(value, TYPES[t])
    if not ok:
        return [f"{where}: {value!r} is not {t}"]
    out = []
    if "enum" in node and value not in node["enum"]:
        out.append(f"{where}: {value!r} not in {node['enum']}")
    if "const" in node and value != node["const"]:
        out.append(f"{where}: {value!r} is not {node['const']!r}")
    if "pattern" in node and not re.search(node["pattern"], value):
        out.append(f"{where}: {value!r} does not match {node['pattern']}")
    for key, holds in (("minimum", lambda v, m: v >= m), ("maximum", lambda v, m: v <= m),
                       ("exclusiveMinimum", lambda v, m: v > m), ("minItems", lambda v, m: len(v) >= m)):
        if key in node and not holds(value, node[key]):
            out.append(f"{where}: {value!r} breaks {key} {node[key]}")
    if isinstance(value, dict):
        props = node.get("properties", {})
        out += [f"{where}: {k} missing" for k in node.get("required", []) if k not in value]
        extra = node.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                out += violations(v, props[k], f"{where}.{k}")
            elif extra is False:
                out.append(f"{where}: {k} is not in the schema")
            elif isinstance(extra, dict):
                out += violations(v, extra, f"{where}.{k}")
    if isinstance(value, list) and "items" in node:
        for i, v in enumerate(value):
            out += violations(v, node["items"], f"{where}[{i}]")
    return out


def _yaml(path: Path) -> dict:
    # JSON keys are strings: the emulator's devices are numbered keys (pydantic reads "5" as 5)
    return json.loads(json.dumps(yaml.safe_load(path.read_text())))


@pytest.mark.parametrize("path", [*sorted(CONFIGS.glob("*.yaml")), ROOT / "examples/atlas-site.yaml"],
                         ids=lambda p: p.name)
def test_every_shipped_target_fits_the_schema(path):
    assert violations(_yaml(path), SCHEMA) == []


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["container"].update(imgae="x"), "$.container: imgae is not in the schema"),
    (lambda d: d["instances"][0].update(port="8002"), "$.instances[0].port: '8002' is not integer"),
    (lambda d: d["instances"][0].update(port=70000), "$.instances[0].port: 70000 breaks maximum 65535"),
    (lambda d: d.pop("thresholds"), "$: thresholds missing"),
    (lambda d: d["benchmark"].update(client="locust"), "$.benchmark.client: 'locust' not in"),
])
def test_the_schema_refuses_what_validation_refuses_by_shape(change, expected):
    d = _yaml(CONFIGS / "cpu-local.yaml")
    change(d)
    assert any(v.startswith(expected) for v in violations(d, SCHEMA)), violations(d, SCHEMA)


def test_a_file_that_extends_needs_nothing_but_keeps_names_and_types():
    assert violations({"extends": "cpu-local", "instances": [{"port": 8009}]}, SCHEMA) == []
    assert violations({"extends": "cpu-local", "instances": [{"prot": 8009}]}, SCHEMA) == [
        "$.instances[0]: prot is not in the schema"]
    assert "$: name missing" in violations({"instances": [{"port": 8009}]}, SCHEMA)

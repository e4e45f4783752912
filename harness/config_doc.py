"""The target file documented from its model: docs/configuration.md and docs/target.schema.json, both generated.

    python -m harness.config_doc > docs/configuration.md
    python -m harness.config_doc --schema > docs/target.schema.json

Every field of harness/config.py's Target, section by section: its type and constraints (from the model's JSON Schema),
its default, what it means (the field's description, else the comments beside and above it in harness/config.py), and
the traps of harness/traps.py that report a problem on it. Which fields a trap reports is the table TRAP_FIELDS below:
tests/unit/test_config_doc.py keeps it complete (every trap listed, every path a field) and true (running the traps'
own unit tests, every field a trap reports is listed for it), and keeps the committed files equal to these.
"""

from __future__ import annotations

import ast
import copy
import io
import json
import sys
import tokenize
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harness import config, traps
from harness.config import Target

DOC_FILE = "docs/configuration.md"
SCHEMA_FILE = "docs/target.schema.json"

# The fields each trap reports its problems on (`[]`: any item; a path may go on past a field that is a mapping, into
# its keys, or name a `vllm serve` flag after the `args` field). tests/unit/test_config_doc.py keeps it complete and
# true.
TRAP_FIELDS: dict[str, tuple[str, ...]] = {
    "nodes_named_and_known": ("nodes[].name", "nodes[].tls", "nodes[].container_name", "mooncake.master.node",
                              "instances[].node"),
    "node_mooncake_config_valid": ("nodes[].mooncake_config",),
    "network_holds_nodes": ("network", "container.network_mode", "nodes[].address", "nodes[].docker"),
    "built_image_on_local_nodes": ("nodes[].docker",),
    "master_address_on_master_node": ("mooncake.config.master_server_address", "mooncake.master.command",
                                      "nodes[].mooncake_config.master_server_address"),
    "pool_addresses_reachable_across_nodes": ("instances[].env.MOONCAKE_REQUESTER_LOCAL_HOSTNAME",
                                              "instances[].env.VLLM_HOST_IP", "instances[].env",
                                              "mooncake.config.local_hostname",
                                              "nodes[].mooncake_config.local_hostname"),
    "npu_ips_unique": ("npu.emulator.devices", "nodes[].npu.emulator.devices"),
    "metrics_port_is_not_rpc_port": ("mooncake.master.metrics_port",),
    "ports_unique": ("instances[].port",),
    "master_command_matches_ports": ("mooncake.master.command",),
    "master_address_matches_port": ("mooncake.config.master_server_address",),
    "instance_names_unique": ("instances[].name",),
    "no_owned_flags_in_args": ("instances[].args",),
    "visible_devices_known_and_unshared": ("instances[].visible_devices",),
    "visible_devices_env_agrees": ("instances[].env.ASCEND_RT_VISIBLE_DEVICES", "instances[].env"),
    "mooncake_config_path_agrees": ("instances[].env.MOONCAKE_CONFIG_PATH",),
    "rpc_ports_unique": ("instances[].kv_transfer_config.kv_connector_extra_config.mooncake_rpc_port",),
    "lookup_rpc_ports_unique": ("instances[].kv_transfer_config.kv_connector_extra_config.lookup_rpc_port",
                                "instances[].kv_transfer_config.kv_connector_extra_config.mooncake_rpc_port"),
    "ascend_store_backend_is_mooncake": ("instances[].kv_transfer_config.kv_connector_extra_config.backend",),
    "pool_keys_agree": ("instances[].model_path", "instances[].args --tensor-parallel-size",
                        "instances[].args --block-size", "instances[].args --pipeline-parallel-size"),
    "hash_seeds_agree": ("instances[].env.PYTHONHASHSEED",),
    "kv_shaping_flags_agree": ("instances[].args --hf-overrides", "instances[].args --dtype",
                               "instances[].args --kv-cache-dtype", "instances[].args --quantization",
                               "instances[].args --revision"),
    "comparisons_valid": ("benchmark.comparisons",),
    "eviction_seed_differs": ("benchmark.eviction.seed",),
    "resilience_seed_differs": ("resilience.seed",),
    "roles_name_two_instances": ("benchmark.roles.first", "benchmark.roles.peer"),
    "probe_settings_usable": ("benchmark.correctness.input_len", "benchmark.correctness.seed"),
    "evidence_sources_usable": ("benchmark.evidence",),
    "prompt_details_enabled": ("instances[].args",),
    "master_flags_known_to_version": ("mooncake.master.command",),
    "lease_outlasts_transfer_timeout": ("mooncake.master.command",),
    "pool_memory_fits_host": ("mooncake.config.global_segment_size",),
    "emulator_covers_devices": ("npu.emulator.devices",),
    "model_volume_mounted": ("container.volumes",),
}

# Defaults that are another module's constant: named, not copied, so the generated files follow the constant.
NAMED_DEFAULTS: dict[tuple[str, str], str] = {
    ("Mooncake", "transfer_failure_patterns"): "harness.failure_lines.TRANSFER_FAILURES",
}

# Fields that a `mode="before"` validator of harness/config.py widens: what the file may hold, beyond the field's type.
ALSO_ACCEPTED: dict[tuple[str, str], dict[str, Any]] = {
    ("Departure", "at"): {"type": "string"},  # one difference, for a list of one
}

INTRO = """\
# Configuration reference: the target file

<!-- Generated by `python -m harness.config_doc > docs/configuration.md` from harness/config.py and
harness/traps.py; tests/unit/test_config_doc.py fails when this file differs. Do not edit by hand. -->

A target is one YAML file (`configs/NAME.yaml`, or any path) given with `--target`. It is validated before anything
starts: a bad one stops `pytest -m acceptance --target FILE` within seconds with pytest's usage-error exit code 4 and
one paragraph naming each bad field and its fix (`target FILE is not valid, N problem(s): [1] FIELD: ...`). Two layers
check it:

1. **Shape** (pydantic, `harness/config.py`): types, ranges, patterns, required fields, and unknown keys (a typo in a
   key is an error, never a silent default).
2. **Traps** (`harness/traps.py`): checks that span several fields, each named, run in the order listed under
   [Traps](#traps). The column "guarded by" below names the traps that report a problem on that field.
   `pool_memory_fits_host` runs for the run's own target only (against this host's MemTotal), so the Atlas target
   can be read on a smaller machine.

The traps in brief: duplicate ports, the master's RPC port equal to its metrics port, two instances in one container
with the same `mooncake_rpc_port` (or lookup socket), instances sharing a pool with different model path strings (a
trailing slash counts), TP sizes or block sizes, `MOONCAKE_CONFIG_PATH` not naming the file the suite writes, a
`master_server_address` that does not point at the master, overlapping visible devices, pooled instances whose
`--hf-overrides`, `--dtype`, `--kv-cache-dtype`, `--quantization` or `--revision` differ (no pool key includes them, so
the pool would serve KV of another model), the correctness probe's seed equal to a dataset's, its prompt shorter than a
block or longer than the context, or an instance without `--enable-prompt-tokens-details`. With `mooncake.version` set
(the Atlas: 0.3.7.post2): the master's KV lease (`--default_kv_lease_ttl`, or that version's default) shorter than an
instance's `ASCEND_TRANSFER_TIMEOUT`, and master flags that version refuses. For the run's own target: the pool's
segments and buffers (segment x TP ranks x pooled instances) larger than this host's memory (the seed: 8 x 100 GiB).
With `nodes`, the multi-node traps ([targets.md](targets.md#nodes)). Thresholds outside (0, 1] are refused by shape.
Instances of vllm-ascend 0.23's `AscendStoreConnector` (or vLLM's `MooncakeStoreConnector`) with other
`PYTHONHASHSEED`s, or 0.23's without one, are refused: vLLM seeds every prompt's first block hash from it, so their
pool keys would differ.

Warnings do not stop a run: the run's summary (`target warnings`) and the Allure report's environment list them, each
with its field. Today one: `kv_connector: MooncakeConnectorStoreV1` on vllm-ascend 0.23 (by the image's tag or a build
argument, else by the keys only 0.23 reads, `backend` and `lookup_rpc_port`), its deprecated alias of
`AscendStoreConnector`.

A target may `extends: OTHER` (a name under `configs/` or a path) and write only what differs: mappings merge key by
key, lists of mappings (the instances) item by item, anything else (a list of volumes, say) is replaced as a whole.
A node's `npu:` is laid over the target's the same way.

For editors: [target.schema.json](target.schema.json) is this model's JSON Schema, generated with this page
(`python -m harness.config_doc --schema > docs/target.schema.json`). With the YAML language server (VS Code's YAML
extension, and others), put this first line in a target file (the path relative to the file):

```yaml
# yaml-language-server: $schema=../docs/target.schema.json
```

In a file that `extends` another, the schema requires nothing (the base supplies it) but still refuses unknown keys
and wrong types.
"""


def _comments() -> dict[tuple[str, str], str]:
    """(class, field) -> the comments on a field's lines and on the comment lines right above it (harness/config.py)."""
    source = Path(config.__file__).read_text()
    lines = source.splitlines()
    by_line: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            by_line[tok.start[0]] = tok.string.lstrip("#").strip()
    out: dict[tuple[str, str], str] = {}
    for cls in ast.parse(source).body:
        if not isinstance(cls, ast.ClassDef):
            continue
        for node in cls.body:
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            above, n = [], node.lineno - 1
            while n >= 1 and lines[n - 1].strip().startswith("#"):
                above.insert(0, by_line[n])
                n -= 1
            beside = [by_line[i] for i in range(node.lineno, (node.end_lineno or node.lineno) + 1) if i in by_line]
            text = " ".join(above + beside).strip()
            if text:
                out[(cls.name, node.target.id)] = text
    return out


def _models() -> dict[str, type[BaseModel]]:
    return {name: obj for name, obj in vars(config).items()
            if isinstance(obj, type) and issubclass(obj, BaseModel) and obj.__module__ == config.__name__}


def _field_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (itself, optional, as list items or as a mapping's values); None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = getattr(annotation, "__args__", ())
    origin = getattr(annotation, "__origin__", None)
    if origin is dict:
        args = args[1:]  # a mapping's values
    for a in args:
        m = _field_model(a)
        if m is not None:
            return m
    return None


def _is_mapping(annotation: Any) -> bool:
    if getattr(annotation, "__origin__", None) is dict:
        return True
    return any(_is_mapping(a) for a in getattr(annotation, "__args__", ()))


def _is_list(annotation: Any) -> bool:
    if getattr(annotation, "__origin__", None) is list:
        return True
    return any(_is_list(a) for a in getattr(annotation, "__args__", ()))


def model_paths() -> dict[str, list[str]]:
    """Class name -> the paths it appears at in a target (`instances[]`, `nodes[].npu`, ...), Target's being ''."""
    out: dict[str, list[str]] = {}

    def walk(model: type[BaseModel], path: str) -> None:
        out.setdefault(model.__name__, []).append(path)
        for name, f in model.model_fields.items():
            sub = _field_model(f.annotation)
            if sub is not None:
                suffix = ".<key>" if _is_mapping(f.annotation) else "[]" if _is_list(f.annotation) else ""
                walk(sub, f"{path}.{name}".lstrip(".") + suffix)
    walk(Target, "")
    return out


def field_of(path: str) -> tuple[type[BaseModel], str, str] | None:
    """The (model, field name, remainder) a TRAP_FIELDS path names: the field it reaches through the models, with
    what follows a mapping field (its keys) or the `args` field (a flag); None when no field of that name is there."""
    head, _, flag = path.partition(" ")
    parts = head.split(".")
    model: type[BaseModel] = Target
    for i, part in enumerate(parts):
        name = part[:-2] if part.endswith("[]") else part
        f = model.model_fields.get(name)
        if f is None or (part.endswith("[]") and not _is_list(f.annotation)):
            return None
        rest = ".".join(parts[i + 1:])
        sub = _field_model(f.annotation)
        if not rest or _is_mapping(f.annotation) or sub is None:
            if rest and not _is_mapping(f.annotation):
                return None
            if flag and name != "args":
                return None
            return model, name, (rest + (" " + flag if flag else "")).strip()
        model = sub
    return None


def guards(path: str, inside: bool = True) -> list[str]:
    """The traps that report on this field path, or (`inside`) on something inside it: its items, keys, flags. A field
    that holds a section is asked without `inside`: its own fields name their traps."""
    def on(p: str) -> bool:
        return p.startswith((path + ".", path + "[", path + " ")) if inside else p == path + "[]"
    return [trap for trap, paths in TRAP_FIELDS.items() if any(p == path or on(p) for p in paths)]


def _schema_type(node: dict, defs: dict) -> str:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in node:
        return " \\| ".join(_schema_type(n, defs) for n in node["anyOf"])
    if "enum" in node:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    t = node.get("type")
    if t == "array":
        return f"list of {_schema_type(node.get('items', {}), defs)}"
    if t == "object":
        extra = node.get("additionalProperties")
        value = _schema_type(extra, defs) if isinstance(extra, dict) else "any"
        return f"mapping to {value}"
    return {"integer": "int", "number": "float", "string": "str", "boolean": "bool", "null": "null"}.get(t, "any")


def _constraints(node: dict) -> list[str]:
    out = []
    for n in [node, *node.get("anyOf", [])]:
        for key, text in (("minimum", ">= {}"), ("exclusiveMinimum", "> {}"), ("maximum", "<= {}"),
                          ("exclusiveMaximum", "< {}"), ("minItems", "at least {} item(s)"),
                          ("pattern", "matches `{}`")):
            if key in n:
                out.append(text.format(n[key]))
    return out


def _default(model: type[BaseModel], name: str) -> str:
    f = model.model_fields[name]
    if f.is_required():
        return "required"
    if (model.__name__, name) in NAMED_DEFAULTS:
        return f"`{NAMED_DEFAULTS[(model.__name__, name)]}`"
    value = f.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "its fields' defaults"
    return f"`{json.dumps(value)}`"


def _validators(model: type[BaseModel]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, dec in model.__pydantic_decorators__.field_validators.items():
        for field in dec.info.fields:
            out.setdefault(field, []).append(name)
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _trap_link(trap: str) -> str:
    return f"[`{trap}`](#trap-{trap})"


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def markdown() -> str:
    """docs/configuration.md."""
    defs = Target.model_json_schema()["$defs"]
    root = Target.model_json_schema()
    comments = _comments()
    models = _models()
    paths = model_paths()
    out = [INTRO]
    out.append("## Sections\n")
    for name in paths:
        at = ", ".join(f"`{p}`" for p in paths[name]) if paths[name] != [""] else "the top level"
        out.append(f"- [{name}](#{name.lower()}): {at}")
    out.append("")
    for name in paths:
        model = models[name]
        schema = root if name == "Target" else defs[name]
        out.append(f"## {name}\n")
        at = ", ".join(f"`{p}`" for p in paths[name]) if paths[name] != [""] else "the top level of the file"
        out.append(f"At: {at}.\n")
        doc = _first_paragraph(model.__doc__) if model.__doc__ else ""
        if doc:
            out.append(doc + "\n")
        validators = _validators(model)
        out.append("| field | type | default | meaning | checks | guarded by |")
        out.append("| --- | --- | --- | --- | --- | --- |")
        for field, f in model.model_fields.items():
            node = schema["properties"][field]
            meaning = f.description or comments.get((name, field), "")
            checks = _constraints(node) + [f"`{v}` (config.py)" for v in validators.get(field, [])]
            inside = _field_model(f.annotation) is None or _is_mapping(f.annotation)
            trap_names = sorted({t for p in paths[name] for t in guards(f"{p}.{field}".lstrip("."), inside)},
                                key=list(TRAP_FIELDS).index)
            typed = _schema_type(node, defs)
            if (name, field) in ALSO_ACCEPTED:
                typed = f"{_schema_type(ALSO_ACCEPTED[(name, field)], defs)} \\| {typed}"
            out.append(f"| `{field}` | {typed} | {_cell(_default(model, field))} | "
                       f"{_cell(meaning)} | {_cell('; '.join(checks))} | "
                       f"{', '.join(_trap_link(t) for t in trap_names)} |")
        out.append("")
    out.append("## Traps\n")
    out.append("In the order `harness/traps.py` reports their problems (`TRAPS`); each with the fields it reports and "
               "its docstring, the trap it guards against.\n")
    for trap in traps.TRAPS:
        fields = ", ".join(f"`{p}`" for p in TRAP_FIELDS.get(trap.__name__, ()))
        out.append(f'- <a id="trap-{trap.__name__}"></a>**`{trap.__name__}`** ({fields}): '
                   f"{' '.join((trap.__doc__ or '').split())}")
    out.append("")
    return "\n".join(out)


def _describe_schema(schema: dict) -> None:
    """Add the comments of harness/config.py as descriptions where pydantic has none, for editors' hover text."""
    comments = _comments()
    for name, node in [("Target", schema), *schema["$defs"].items()]:
        for field, prop in node.get("properties", {}).items():
            if "description" not in prop and (name, field) in comments:
                prop["description"] = comments[(name, field)]
            if (name, field) in ALSO_ACCEPTED:
                typed = {k: prop.pop(k) for k in list(prop) if k not in ("title", "description", "default")}
                prop["anyOf"] = [ALSO_ACCEPTED[(name, field)], typed]
            if (name, field) in NAMED_DEFAULTS:
                prop.pop("default", None)
                prop["description"] = (prop.get("description", "") + f" (default: {NAMED_DEFAULTS[(name, field)]})")


def _without_required(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _without_required(v) for k, v in node.items() if k != "required"}
        if isinstance(out.get("$ref"), str):
            out["$ref"] = out["$ref"].replace("#/$defs/", "#/$defs/Partial")
        return out
    if isinstance(node, list):
        return [_without_required(v) for v in node]
    return node


def schema() -> dict[str, Any]:
    """The target file's JSON Schema for editors: Target's, with the comments as descriptions, and `extends`: a file
    that extends another is checked by the same schema with nothing required."""
    full = Target.model_json_schema()
    _describe_schema(full)
    defs = full.pop("$defs")
    root = {k: v for k, v in full.items() if k not in ("title", "description")}
    root["properties"] = {"extends": {"type": "string", "description": "the target this file is laid over (a name "
                                                                        "under configs/ or a path): write only what "
                                                                        "differs"}, **root["properties"]}
    partial_root = _without_required(copy.deepcopy(root))
    all_defs = {**defs, **{f"Partial{k}": _without_required(copy.deepcopy(v)) for k, v in defs.items()}}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",  # the draft editors read best; every keyword is in it
        "title": "KV pool acceptance target",
        "description": "A target file of the KV pool acceptance suite (docs/configuration.md), generated from "
                       "harness/config.py by python -m harness.config_doc --schema.",
        "$defs": {**all_defs, "Target": root, "PartialTarget": partial_root},
        "if": {"required": ["extends"]},
        "then": {"$ref": "#/$defs/PartialTarget"},
        "else": {"$ref": "#/$defs/Target"},
    }


def schema_text() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    if argv not in ([], ["--schema"]):
        sys.stderr.write("usage: python -m harness.config_doc [--schema]\n")
        return 2
    sys.stdout.write(schema_text() if argv else markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

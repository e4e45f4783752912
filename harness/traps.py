"""The known traps of a target: checks that span several fields, each one small, named and tested on its own.

Pydantic (harness/config.py) checks shape and ranges; what it cannot see is a target whose every field is valid
but whose fields contradict each other (two instances on one port, a pool key that differs, a lease shorter
than a transfer). Each check below takes a validated Target and returns (field, what is wrong and how to fix
it) pairs; its docstring says the trap. `TRAPS` lists them in the order their problems are reported, and
`check_all` runs them (harness.config.load_target does, after pydantic).

Imports: this module needs harness.config's models only as annotations, so it imports them under TYPE_CHECKING
and harness.config imports it at the top with no cycle.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from harness import ascend_store
from harness.names import THRESHOLDS

if TYPE_CHECKING:
    from harness.config import Instance, Node, Target

Problem = tuple[str, str]  # (field, what is wrong and how to fix it)

# vLLM defaults when a flag is absent (a pool key differs if one instance sets it and one does not).
_TP_FLAGS = ("--tensor-parallel-size", "-tp")
_BLOCK_FLAGS = ("--block-size",)
_PP_FLAGS = ("--pipeline-parallel-size", "-pp")
# Flags the suite renders from typed fields; in `args` they would contradict those fields.
_OWNED_FLAGS = {
    "--host": "host", "--port": "port", "--served-model-name": "model.served_name",
    "--kv-transfer-config": "kv_transfer_config",
}
# Flags that change the KV a model computes but that no pool key includes (model path, TP, block size and
# token hashes are in the key; these are not).
_KV_SHAPING_FLAGS = ("--hf-overrides", "--dtype", "--kv-cache-dtype", "--quantization", "--revision")
PROMPT_DETAILS_FLAG = "--enable-prompt-tokens-details"  # usage.prompt_tokens_details.cached_tokens

# Defaults of the mooncake_master versions the suite meets, from their `--help` (measured 2026-12-01): the
# checks that depend on an unset flag run only when mooncake.version names one of these.
MOONCAKE_MASTER_DEFAULTS: dict[str, dict[str, Any]] = {
    # --default_kv_lease_ttl is a plain uint64 of ms; no --metrics_host (the admin server binds 0.0.0.0).
    "0.3.7.post2": {"default_kv_lease_ttl_ms": 5000, "lease_units": False, "flags_absent": ("--metrics_host",)},
    # --default_kv_lease_ttl "5000", units ms/s/m/h accepted; no --metrics_host (vllm-ascend 0.23's KV pool guide's).
    "0.3.11.post1": {"default_kv_lease_ttl_ms": 5000, "lease_units": True, "flags_absent": ("--metrics_host",)},
    # --default_kv_lease_ttl "10000", units ms/s/m/h accepted; has --metrics_host.
    "0.3.13.post1": {"default_kv_lease_ttl_ms": 10000, "lease_units": True, "flags_absent": ()},
}
_DURATION_MS = {None: 1, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}

VLLM_ASCEND_STORE_CONNECTOR = ascend_store.OLD_NAME  # vllm-ascend 0.11's connector (the seed's)
# vllm-ascend 0.23's pool connector (distributed/kv_transfer/kv_pool/ascend_store/; MooncakeConnectorStoreV1 became its
# alias there: harness/ascend_store.py tells them apart) and the backends it takes.
ASCEND_STORE_CONNECTOR = ascend_store.CONNECTOR
ASCEND_STORE_BACKENDS = ascend_store.BACKENDS
# vllm-ascend 0.11 defaults when mooncake.json leaves them out (read in its config reader, 2026-12-01).
VLLM_ASCEND_LOCAL_BUFFER_DEFAULT = 1073741824
GiB = 1 << 30


def _gib(n: float) -> str:
    return f"{n / GiB:.0f} GiB" if n % GiB == 0 else f"{n / GiB:.1f} GiB"


def _flag_value(command: list[str], flag: str) -> str | None:
    for i, token in enumerate(command):
        if token == flag and i + 1 < len(command):
            return command[i + 1]
        if token.startswith(flag + "="):
            return token.split("=", 1)[1]
    return None


def _gflag(command: list[str], name: str) -> str | None:
    """The value of a gflags flag (`--name=V`, `--name V`, `-name=V`, `-name V`); the last one wins, as in gflags."""
    found = None
    for i, token in enumerate(command):
        for flag in (f"--{name}", f"-{name}"):
            if token == flag and i + 1 < len(command):
                found = command[i + 1]
            elif token.startswith(flag + "="):
                found = token.split("=", 1)[1]
    return found


def _instances(t: Target) -> list[tuple[str, Instance]]:
    """Every instance with its field path, `instances[i]`."""
    return [(f"instances[{i}]", x) for i, x in enumerate(t.instances)]


def _node_name(t: Target, x: Instance) -> str:
    """The instance's node, or its own unknown name (nodes_named_and_known reports that)."""
    try:
        return t.node_of(x).name
    except KeyError:
        return str(x.node)


def _npu(t: Target, x: Instance):
    try:
        return t.npu_of(t.node_of(x))
    except KeyError:
        return t.npu


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _pooled(t: Target) -> list[tuple[str, Instance]]:
    """The instances that share the pool: those with a kv_transfer_config."""
    return [(loc, x) for loc, x in _instances(t) if x.kv_transfer_config is not None]


def _unlike_first(pooled: list[tuple[str, Instance]], get) -> list[tuple[str, str, object, object]]:
    """(loc, the first one's location and name, its value, the first one's value) for each pooled instance after
    the first whose `get` value differs from the first one's."""
    (first_loc, first) = pooled[0]
    want = get(first)
    return [(loc, f"{first_loc} ({first.name})", get(x), want) for loc, x in pooled[1:] if get(x) != want]


# Ports and addresses. Host network: every listening port of the deployment shares one namespace.

def metrics_port_is_not_rpc_port(t: Target) -> list[Problem]:
    """The master's admin HTTP server cannot bind its RPC port: a master given one port for both exits."""
    m = t.mooncake.master
    if m.port != m.metrics_port:
        return []
    return [("mooncake.master.metrics_port",
             f"equals the master RPC port {m.port}; the admin HTTP server cannot bind it "
             "(the master exits); give it another port (mooncake_master's default is 9003)")]


def ports_unique(t: Target) -> list[Problem]:
    """An instance port that is another instance's or the master's on the same node cannot be bound: that process
    fails to start. Host network: every listening port of a node shares one namespace; other nodes have their own."""
    m = t.mooncake.master
    ports: dict[tuple[str, int], str] = {(t.master_node().name, m.port): "mooncake.master.port"}
    if m.metrics_port != m.port:
        ports[(t.master_node().name, m.metrics_port)] = "mooncake.master.metrics_port"
    problems: list[Problem] = []
    for loc, x in _instances(t):
        key = (_node_name(t, x), x.port)
        if key in ports:
            problems.append((f"{loc}.port", f"{x.port} is also {ports[key]}; give each its own port"))
        else:
            ports[key] = f"{loc}.port"
    return problems


def master_command_matches_ports(t: Target) -> list[Problem]:
    """The suite probes the master at its typed ports: a command that starts it on others is a master never found."""
    m = t.mooncake.master
    problems: list[Problem] = []
    for flag, field, want in (("--rpc_port", "port", m.port), ("--metrics_port", "metrics_port", m.metrics_port)):
        given = _flag_value(m.command, flag) or (_flag_value(m.command, "--port") if flag == "--rpc_port" else None)
        if given is not None and given != str(want):
            problems.append(("mooncake.master.command",
                             f"sets {flag} {given} but mooncake.master.{field} is {want}; make them equal"))
    return problems


def master_address_matches_port(t: Target) -> list[Problem]:
    """mooncake.json's master_server_address is where the connectors look for the master: it must be its port."""
    m = t.mooncake.master
    host, _, port = t.mooncake.config.master_server_address.rpartition(":")
    if port == str(m.port):
        return []
    return [("mooncake.config.master_server_address",
             f"points at port {port or '?'} but the master listens on {m.port}; use {host or m.host}:{m.port}")]


# Each instance on its own.

def instance_names_unique(t: Target) -> list[Problem]:
    """Instances are told apart by name (roles, logs, reports): two of one name are one to the suite."""
    names: dict[str, str] = {}
    problems: list[Problem] = []
    for loc, x in _instances(t):
        if x.name in names:
            problems.append((f"{loc}.name", f"{x.name!r} is also {names[x.name]}; names must be unique"))
        names.setdefault(x.name, f"{loc}.name")
    return problems


def no_owned_flags_in_args(t: Target) -> list[Problem]:
    """The suite renders --host, --port, --served-model-name and --kv-transfer-config from typed fields: the same
    flag in args would contradict the field the suite probes."""
    return [(f"{loc}.args", f"contains {flag}; set {field} instead")
            for loc, x in _instances(t) for flag, field in _OWNED_FLAGS.items()
            if x.arg(flag) is not None or flag in x.args]


def visible_devices_known_and_unshared(t: Target) -> list[Problem]:
    """An instance may use only the NPUs its node's checks cover (npu.devices), and no NPU another instance of that
    node uses."""
    devices: dict[tuple[str, int], str] = {}
    problems: list[Problem] = []
    for loc, x in _instances(t):
        known, node = _npu(t, x).devices, _node_name(t, x)
        where = f"npu.devices {known}" if not t.nodes else f"node {node}'s npu.devices {known}"
        for d in x.visible_devices:
            if d not in known:
                problems.append((f"{loc}.visible_devices", f"device {d} is not in {where}"))
            elif (node, d) in devices:
                problems.append((f"{loc}.visible_devices", f"device {d} is also used by {devices[(node, d)]}"))
            else:
                devices[(node, d)] = x.name
    return problems


def visible_devices_env_agrees(t: Target) -> list[Problem]:
    """The suite sets the visible-devices variable from visible_devices: an env entry that says otherwise would pin
    the instance to other NPUs than the ones the target checks."""
    problems: list[Problem] = []
    for loc, x in _instances(t):
        var = _npu(t, x).visible_devices_env
        env_visible = x.env.get(var)
        want_visible = ",".join(map(str, x.visible_devices))
        if env_visible is not None and env_visible != want_visible:
            problems.append((f"{loc}.env.{var}",
                             f"is {env_visible!r} but visible_devices is [{want_visible}]; "
                             "drop it from env (the suite sets it from visible_devices)"))
    return problems


def mooncake_config_path_agrees(t: Target) -> list[Problem]:
    """A connector reads mooncake.json from MOONCAKE_CONFIG_PATH: it must be where the suite writes the file."""
    problems: list[Problem] = []
    for loc, x in _pooled(t):
        cfg_path = x.env.get("MOONCAKE_CONFIG_PATH")
        if cfg_path != t.mooncake.config_path:
            problems.append((f"{loc}.env.MOONCAKE_CONFIG_PATH",
                             f"is {cfg_path!r} but mooncake.json is written to {t.mooncake.config_path!r} "
                             "(mooncake.config_path); the connector would read another file"))
    return problems


def rpc_ports_unique(t: Target) -> list[Problem]:
    """The seed's own trap: each connector binds an IPC socket named after its mooncake_rpc_port, so two instances
    of one container with the same port collide."""
    rpc_ports: dict[tuple[str, str], str] = {}
    problems: list[Problem] = []
    for loc, x in _pooled(t):
        rpc = x.kv_transfer_config.kv_connector_extra_config.get("mooncake_rpc_port")
        if rpc is None:
            continue
        key = (_node_name(t, x), str(rpc))
        if key in rpc_ports:
            problems.append((f"{loc}.kv_transfer_config.kv_connector_extra_config.mooncake_rpc_port",
                             f"{rpc!r} is also {rpc_ports[key]}; instances in one container "
                             "bind an IPC socket named after it and collide: give each its own port"))
        rpc_ports.setdefault(key, x.name)
    return problems


def _lookup_port(t: Target, x: Instance) -> tuple[str, str, bool] | None:
    """(the port an instance's lookup socket is named after, the extra-config key it comes from, whether it is set)
    for the connectors whose scheduler asks its worker through such a socket; None for the others."""
    kv = x.kv_transfer_config
    extra = kv.kv_connector_extra_config if kv else {}
    if kv is not None and kv.kv_connector == "MooncakeStoreConnector":
        return str(extra.get("lookup_rpc_port", 0)), "lookup_rpc_port", "lookup_rpc_port" in extra
    if ascend_store.runs_ascend_store(t, x):  # by its name, or by the old one on a 0.23-era stack
        # pool_scheduler.py:1146-1161: lookup_rpc_port, else the deprecated mooncake_rpc_port, else 0.
        for key in ("lookup_rpc_port", "mooncake_rpc_port"):
            if key in extra:
                return str(extra[key]), key, True
        return "0", "lookup_rpc_port", False
    return None


def lookup_rpc_ports_unique(t: Target) -> list[Problem]:
    """The same trap in vLLM's own MooncakeStoreConnector and vllm-ascend 0.23's AscendStoreConnector: the scheduler
    asks its worker through an IPC socket named after the lookup port (vLLM: <VLLM_RPC_BASE_PATH>/lookup_rpc_port_
    <port>_host_<host>_dp_rank<r>, default 0; AscendStoreConnector: lookup_rpc_port_<port>_dp_rank<r>, its port
    lookup_rpc_port, else mooncake_rpc_port, else 0). Two instances of one container with the same port share one
    socket: the last to start answers both, and when it dies the other's scheduler waits for an answer forever
    (measured on vLLM's: a whole instance stalled for minutes)."""
    seen: dict[tuple[str, str], str] = {}
    problems: list[Problem] = []
    for loc, x in _pooled(t):
        found = _lookup_port(t, x)
        if found is None:
            continue
        port, key, given = found
        node = (_node_name(t, x), port)
        if node in seen:
            said = f"{port!r}" if given else f"{port!r} (the default)"
            problems.append((f"{loc}.kv_transfer_config.kv_connector_extra_config.{key}",
                             f"{said} is also {seen[node]}'s; instances in one container bind one lookup IPC socket "
                             f"named after it ({x.kv_transfer_config.kv_connector}): one answers the other's "
                             "lookups, and when it dies the other hangs; give each its own lookup_rpc_port"))
        seen.setdefault(node, x.name)
    return problems


def ascend_store_backend_is_mooncake(t: Target) -> list[Problem]:
    """AscendStoreConnector's kv_connector_extra_config.backend chooses its pool (mooncake when absent); the suite's
    stages check a Mooncake pool (its master, its segments, its metrics), so the target names it: `mooncake`."""
    problems: list[Problem] = []
    for loc, x in _pooled(t):
        if x.kv_transfer_config.kv_connector != ASCEND_STORE_CONNECTOR:
            continue
        field = f"{loc}.kv_transfer_config.kv_connector_extra_config.backend"
        backend = x.kv_transfer_config.kv_connector_extra_config.get("backend")
        if backend is None:
            problems.append((field, "is missing: AscendStoreConnector then takes mooncake (its default), but the "
                                    "target should say which pool it checks, as vllm-ascend's KV pool guide does: "
                                    "backend: mooncake"))
        elif str(backend).lower() not in ASCEND_STORE_BACKENDS:
            problems.append((field, f"{backend!r} is none of AscendStoreConnector's backends "
                                    f"({', '.join(ASCEND_STORE_BACKENDS)}): its worker stops at start-up on a bare "
                                    "AssertionError (pool_worker.py:242-243); use backend: mooncake"))
        elif str(backend).lower() != "mooncake":
            problems.append((field, f"{backend!r}: this suite checks a Mooncake pool (its master, segments and "
                                    "metrics) and has no checks for that backend; use backend: mooncake"))
    return problems


# Instances sharing the pool.

def pool_keys_agree(t: Target) -> list[Problem]:
    """Instances sharing the pool must key KV the same way: identical model path string, TP size and block size
    (the pool key is model path @ world size @ worker @ chunk hash), or they never hit each other's KV."""
    pooled = _pooled(t)
    if not pooled:
        return []
    keys = {
        "model path": (lambda x: t.model_path(x), "model_path"),
        "tensor parallel size": (lambda x: x.arg(*_TP_FLAGS, default="1"), "args --tensor-parallel-size"),
        "block size": (lambda x: x.arg(*_BLOCK_FLAGS, default="(vLLM default)"), "args --block-size"),
    }
    return [(f"{loc}.{field}", f"{what} {value!r} differs from {first} {theirs!r}; instances sharing a pool must "
                               "match exactly or they never hit each other's KV (pool keys include it)")
            for what, (get, field) in keys.items() for loc, first, value, theirs in _unlike_first(pooled, get)]


def kv_shaping_flags_agree(t: Target) -> list[Problem]:
    """Flags that change the KV an instance computes but are in no pool key (dtype, quantization, hf overrides...):
    the pool would hand one instance KV that is wrong for the other, and outputs would silently differ."""
    pooled = _pooled(t)
    if not pooled:
        return []
    return [(f"{loc}.args {flag}", f"{value!r} differs from {first} {theirs!r}; pool keys do not include it, so "
                                   "the pool would serve KV computed by another model: give instances sharing a "
                                   "pool the same value")
            for flag in _KV_SHAPING_FLAGS
            for loc, first, value, theirs in _unlike_first(pooled, lambda x, f=flag: x.arg(f))]


HASH_SEED = "PYTHONHASHSEED"
# Connectors whose pool keys hold vLLM's own block hashes (request.block_hashes): vLLM's MooncakeStoreConnector, and
# vllm-ascend 0.23's AscendStoreConnector (ascend_store/config_data.py:66-76, pool_scheduler.py:197-200). vllm-ascend
# 0.11's MooncakeConnectorStoreV1 is not among them: cpu-local-seed's instances set no seed and step 3 hits.
_BLOCK_HASH_KEYED = ("MooncakeStoreConnector",)


def hash_seeds_agree(t: Target) -> list[Problem]:
    """vLLM seeds the hash of every prompt's first block from PYTHONHASHSEED when it is set (and every later block
    chains from it), so pooled instances whose keys hold vLLM's block hashes must set one and the same value, or they
    never hit each other's KV. Unset, vLLM 0.23 (vllm-ascend 0.23's pairing) draws a random seed per process
    (kv_cache_utils.py:98-113); vLLM 0.32 uses a fixed default, so cpu-local may leave it unset on all of them.
    Measured with vLLM's own init_none_hash and hash_block_tokens, one block of 128 tokens: seed 0 and seed 1 give
    other hashes on both versions; unset gives a new hash per process on 0.23 and one hash on 0.32."""
    keyed = [(loc, x) for loc, x in _pooled(t)
             if ascend_store.runs_ascend_store(t, x) or x.kv_transfer_config.kv_connector in _BLOCK_HASH_KEYED]
    if not keyed:
        return []

    def seed(x: Instance) -> str | None:  # an instance's own env wins over the container's, which it inherits
        return x.env.get(HASH_SEED, t.container.env.get(HASH_SEED))

    problems = [(f"{loc}.env.{HASH_SEED}",
                 f"is not set: vLLM 0.23, under {x.name}'s {x.kv_transfer_config.kv_connector}, then seeds every "
                 "prompt's first block hash from os.urandom, anew in each process, so no other instance ever finds "
                 "its KV in the pool; set it to one value on every pooled instance (vllm-ascend's KV pool guide: "
                 "PYTHONHASHSEED=0)")
                for loc, x in keyed if seed(x) is None and ascend_store.runs_ascend_store(t, x)]
    if problems:
        return problems  # set first; then they must agree

    def said(value: str | None) -> str:
        return repr(value) if value is not None else "unset"

    return [(f"{loc}.env.{HASH_SEED}",
             f"{said(value)} differs from {first}'s {said(theirs)}: vLLM derives the hash of every prompt's first "
             "block from it, so their pool keys differ and the instances never hit each other's KV; give every pooled "
             "instance the same value")
            for loc, first, value, theirs in _unlike_first(keyed, seed)]


# The benchmark.

def comparisons_valid(t: Target) -> list[Problem]:
    """A comparison's name keys its verdict in results.json (unique, not a threshold's), its steps must be run (the
    evict step only with benchmark.eviction), and a step compared with itself proves nothing."""
    names_seen = set(THRESHOLDS)
    problems: list[Problem] = []
    for i, c in enumerate(t.benchmark.comparisons):
        if c.name in names_seen:
            problems.append((f"benchmark.comparisons[{i}].name", f"{c.name!r} is already used; names must be unique"))
        names_seen.add(c.name)
        if "evict" in (c.baseline, c.target) and t.benchmark.eviction is None:
            problems.append((f"benchmark.comparisons[{i}]", "uses the evict step but benchmark.eviction is not set"))
        if c.baseline == c.target:
            problems.append((f"benchmark.comparisons[{i}]", f"compares {c.target} with itself"))
    return problems


def eviction_seed_differs(t: Target) -> list[Problem]:
    """Dataset B must be other prompts than dataset A, or sending it evicts nothing."""
    e = t.benchmark.eviction
    if e is None or e.seed != t.benchmark.seed:
        return []
    return [("benchmark.eviction.seed", "equals benchmark.seed: dataset B would be dataset A")]


def resilience_seed_differs(t: Target) -> list[Problem]:
    """The resilience stage's prompts must be fresh to every instance, or a "miss" it expects would be a hit."""
    b = t.benchmark
    taken = {"benchmark.seed": b.seed, "benchmark.correctness.seed": b.correctness.seed} | (
        {"benchmark.eviction.seed": b.eviction.seed} if b.eviction else {})
    return [("resilience.seed", f"equals {field}: the resilience stage's prompts would be ones already sent")
            for field, seed in taken.items() if t.resilience.seed == seed]


def roles_name_two_instances(t: Target) -> list[Problem]:
    """benchmark.roles must name two different instances of the target: step 3 reads the pool from another
    instance than the one that filled it."""
    r, names = t.benchmark.roles, {x.name: x for x in t.instances}
    problems = [(f"benchmark.roles.{role}", f"{name!r} is no instance (instances: {', '.join(names)})")
                for role, name in (("first", r.first), ("peer", r.peer)) if name is not None and name not in names]
    if problems:
        return problems
    first = r.first or t.instances[0].name
    if r.peer is not None and r.peer == first:
        return [("benchmark.roles.peer", f"is {r.peer!r}, the first instance too: step 3 must read the pool from "
                                         "another instance than the one that filled it")]
    return []  # an instance of a role without a connector is a deployment fault that stage 5 names, live


def probe_settings_usable(t: Target) -> list[Problem]:
    """The correctness probe's own prompts must be fresh (a seed of its own), long enough to hit (more than one
    block) and short enough to serve (within --max-model-len)."""
    c, b = t.benchmark.correctness, t.benchmark
    if c.mode == "off":
        return []
    problems: list[Problem] = []
    taken = {"benchmark.seed": b.seed} | ({"benchmark.eviction.seed": b.eviction.seed} if b.eviction else {})
    for field, seed in taken.items():
        if c.seed == seed:
            problems.append(("benchmark.correctness.seed", f"equals {field}: the probe's prompts would be prefixes "
                                                           "of a dataset already sent, so its cold run is no cold run"))
    pooled = _pooled(t)
    if pooled:  # pooled instances agree on these (pool_keys_agree), so the first one speaks for all
        loc, x = pooled[0]
        block, limit = x.arg(*_BLOCK_FLAGS), x.arg("--max-model-len")
        if block is not None and block.isdigit() and c.input_len <= int(block):
            problems.append(("benchmark.correctness.input_len", f"{c.input_len} tokens hold no full block of "
                                                                f"{block} ({loc}.args --block-size): nothing can hit"))
        if limit is not None and limit.isdigit() and c.input_len + c.output_len > int(limit):
            problems.append(("benchmark.correctness.input_len",
                             f"{c.input_len} + output_len {c.output_len} exceeds {loc}.args --max-model-len {limit}"))
    return problems


def evidence_sources_usable(t: Target) -> list[Problem]:
    """Step 3 must have at least one source that can prove its KV came from the pool, each one usable: without one
    its verdict would rest on TTFT alone."""
    sources = t.benchmark.evidence
    if not sources:
        return [("benchmark.evidence", "is empty: nothing could prove that step 3's KV came from the pool, so its "
                                       "verdict would rest on TTFT alone; declare at least one of external_hits, "
                                       "cached_tokens, master_gets, connector_log")]
    problems: list[Problem] = []
    if len(set(sources)) != len(sources):
        problems.append(("benchmark.evidence", f"names a source twice: {sources}"))
    for loc, x in _pooled(t):
        level = x.env.get("VLLM_LOGGING_LEVEL", "INFO").upper()
        if "connector_log" in sources and level in ("WARNING", "ERROR", "CRITICAL"):
            # A connector that logs nothing at this level would read as 0 tokens loaded (vllm-ascend 0.23's is
            # silent on a miss) or as absent: neither says what happened.
            problems.append(("benchmark.evidence", f"connector_log: {loc}.env.VLLM_LOGGING_LEVEL is {level}, which "
                                                   "hides the connector's per-request INFO line; drop the source or "
                                                   "log at INFO"))
            continue
        debug = level == "DEBUG"
        if ("connector_log" in sources and x.kv_transfer_config.kv_connector == "MooncakeStoreConnector"
                and not debug):
            problems.append(("benchmark.evidence", f"connector_log: {x.name}'s MooncakeStoreConnector (vLLM's own) "
                                                   "logs its per-request hit line at DEBUG only; drop the source or "
                                                   f"set {loc}.env.VLLM_LOGGING_LEVEL DEBUG"))
    return problems


def prompt_details_enabled(t: Target) -> list[Problem]:
    """usage.prompt_tokens_details.cached_tokens, which the probe and the cached_tokens evidence read, exists only
    with --enable-prompt-tokens-details."""
    users = ([] if t.benchmark.correctness.mode == "off" else ["the correctness probe (benchmark.correctness)"]) + (
        ["the cached_tokens evidence source (benchmark.evidence)"] if "cached_tokens" in t.benchmark.evidence else [])
    return [(f"{loc}.args", f"lacks {PROMPT_DETAILS_FLAG}, which {' and '.join(users)} read each request's cached "
                            "tokens from (usage.prompt_tokens_details.cached_tokens); add the flag")
            for loc, x in _pooled(t) if users and PROMPT_DETAILS_FLAG not in x.args]


# The Mooncake master and the pool.

def master_flags_known_to_version(t: Target) -> list[Problem]:
    """Flags of mooncake.master.command that the target's Mooncake version refuses: its master exits at start."""
    version = t.mooncake.version
    known = MOONCAKE_MASTER_DEFAULTS.get(version or "")
    if known is None:
        return []
    problems: list[Problem] = []
    for flag in known["flags_absent"]:
        if _gflag(t.mooncake.master.command, flag.lstrip("-")) is not None or flag in t.mooncake.master.command:
            problems.append(("mooncake.master.command",
                             f"passes {flag}, which mooncake_master {version} (mooncake.version) does not have: it "
                             "exits on an unknown flag; remove it"))
    lease = _gflag(t.mooncake.master.command, "default_kv_lease_ttl")
    if lease is not None and not known["lease_units"] and not lease.strip().isdigit():
        problems.append(("mooncake.master.command",
                         f"--default_kv_lease_ttl {lease!r}: mooncake_master {version} (mooncake.version) takes a "
                         "plain number of milliseconds and exits on anything else; write it in ms, e.g. 10000"))
    return problems


def lease_outlasts_transfer_timeout(t: Target) -> list[Problem]:
    """The master's KV lease must outlast the instances' transfer timeout: a get holds a lease from the master's
    answer until its transfer ends, and a lease that runs out first fails the get with LEASE_EXPIRED (-707)."""
    command = t.mooncake.master.command
    text = _gflag(command, "default_kv_lease_ttl")
    known = MOONCAKE_MASTER_DEFAULTS.get(t.mooncake.version or "")
    if text is not None:
        if known is not None and not known["lease_units"] and not text.strip().isdigit():
            return []  # this version's master refuses it: master_flags_known_to_version says so
        m = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h)?\s*", text)
        if m is None:
            return [("mooncake.master.command", f"--default_kv_lease_ttl {text!r} is not a duration; "
                                                "give milliseconds, e.g. --default_kv_lease_ttl=10000")]
        lease, source = int(m.group(1)) * _DURATION_MS[m.group(2)], f"--default_kv_lease_ttl {text}"
    elif known is not None:
        lease, source = known["default_kv_lease_ttl_ms"], f"mooncake_master {t.mooncake.version}'s default"
    else:
        return []  # neither given nor a known version's default: nothing to compare
    # Both of Mooncake's ascend transport timeouts (ms; vllm-ascend's KV pool guide: the lease must exceed both).
    timeouts = [(int(x.env[var]), f"{loc}.env.{var}") for loc, x in _pooled(t)
                for var in ("ASCEND_TRANSFER_TIMEOUT", "ASCEND_CONNECT_TIMEOUT")
                if x.env.get(var, "").strip().isdigit()]
    if not timeouts:
        return []
    timeout, where = max(timeouts, key=lambda pair: pair[0])
    if lease >= timeout:
        return []
    return [("mooncake.master.command",
             f"the master's KV lease is {lease} ms ({source}) but {where} is {timeout} ms: under load a transfer or "
             "its connection outlives its lease and the get fails with LEASE_EXPIRED (-707), the KV is recomputed; "
             f"pass --default_kv_lease_ttl={timeout} or more (milliseconds)")]


def pool_memory_fits_host(t: Target, host_memory: int | None) -> list[Problem]:
    """Every rank of a pooled instance registers its own global_segment_size (embedded mode) and local buffer in
    host memory; together they must fit in the host's RAM (`host_memory` bytes) or registration fails at start-up.
    None: the target is validated away from its host, nothing to compare."""
    if host_memory is None:
        return []
    cfg = t.mooncake.config
    pooled = _pooled(t)
    ranks: list[tuple[str, int]] = []
    for _, x in pooled:
        tp, pp = x.arg(*_TP_FLAGS, default="1"), x.arg(*_PP_FLAGS, default="1")
        if not (tp and tp.isdigit() and pp and pp.isdigit()):
            return []  # not a number: vLLM refuses it, not this check
        ranks.append((x.name, int(tp) * int(pp)))
    # vllm-ascend 0.11 reads no `mode` from mooncake.json: its every rank contributes a segment.
    ascend = any(x.kv_transfer_config.kv_connector == VLLM_ASCEND_STORE_CONNECTOR for _, x in pooled)
    embedded = cfg.mode in (None, "embedded") or ascend
    segment = cfg.global_segment_size if embedded else 0
    buffer = cfg.local_buffer_size if cfg.local_buffer_size is not None else VLLM_ASCEND_LOCAL_BUFFER_DEFAULT
    n = sum(r for _, r in ranks)
    need = n * (segment + buffer)
    if not n or need <= host_memory:
        return []
    fits = max(host_memory // n - buffer, 0)
    per = ", ".join(f"{name}: {r}" for name, r in ranks)
    return [("mooncake.config.global_segment_size",
             f"{n} pooled ranks ({per}) x ({_gib(segment)} segment + {_gib(buffer)} local buffer) = {_gib(need)} "
             f"of host memory, more than this machine's {_gib(host_memory)} (MemTotal): registering the segments "
             f"fails at start-up; lower it to at most {fits} ({_gib(fits)}) per rank or use fewer ranks")]


# The NPUs and the model.

def emulator_covers_devices(t: Target) -> list[Problem]:
    """The emulator must describe every NPU the target checks, or hccn_tool and npu-smi have nothing to answer."""
    problems: list[Problem] = []
    for field, npu in _npus(t):
        emu = npu.emulator
        missing = [d for d in npu.devices if d not in emu.devices] if emu is not None else []
        if missing:
            problems.append((f"{field}.emulator.devices", f"has no state for device(s) {missing}; add them"))
    return problems


def model_volume_mounted(t: Target) -> list[Problem]:
    """A model the suite builds must reach the container: some volume mounts model.build.output at a folder that
    holds model.path, or the instances find no model."""
    b = t.model.build
    if b is None or any(v.host == b.output and t.model.path.rstrip("/").startswith(v.container.rstrip("/"))
                        for v in t.container.volumes):
        return []
    return [("container.volumes", f"no volume mounts model.build.output {b.output!r} at a folder holding "
                                  f"model.path {t.model.path!r}; add one")]


# Nodes: a target that lists `nodes` (the successor guide's two servers).

def _npus(t: Target) -> list[tuple[str, Any]]:
    """Each node's NPU section with its field path: `npu` for a node that has none of its own."""
    if not t.nodes:
        return [("npu", t.npu)]
    return [(f"nodes[{i}].npu" if n.npu else "npu", t.npu_of(n)) for i, n in enumerate(t.nodes)]


def _node_field(t: Target, node: Node, key: str) -> str:
    """Where a node's mooncake.json field is set: the node's own override, or the target's."""
    i = next(i for i, n in enumerate(t.nodes) if n.name == node.name)
    return f"nodes[{i}].mooncake_config.{key}" if key in node.mooncake_config else f"mooncake.config.{key}"


def nodes_named_and_known(t: Target) -> list[Problem]:
    """Nodes are told apart by name, and the master and each instance run on a node the target lists: a misspelt
    node would put a process on no server at all."""
    problems: list[Problem] = []
    names: dict[str, str] = {}
    containers: dict[tuple[str, str], str] = {}
    for i, n in enumerate(t.nodes):
        if n.name in names:
            problems.append((f"nodes[{i}].name", f"{n.name!r} is also {names[n.name]}; names must be unique"))
        names.setdefault(n.name, f"nodes[{i}]")
        if n.docker.startswith("tcp://") and n.tls is None:
            problems.append((f"nodes[{i}].tls", f"{n.docker} without TLS is a daemon anyone on the network drives; "
                                                "give tls (ca_cert, client_cert, client_key) or use ssh://"))
        if n.tls is not None and not n.docker.startswith("tcp://"):
            problems.append((f"nodes[{i}].tls", f"only a tcp:// daemon takes TLS certificates, not {n.docker}"))
        key = (n.docker, t.container_name(n))
        if key in containers:
            problems.append((f"nodes[{i}].container_name", f"{key[1]!r} is also {containers[key]}'s container on "
                                                           "the same daemon; give each node its own"))
        containers.setdefault(key, f"nodes[{i}]")
    refs = [("mooncake.master.node", t.mooncake.master.node)] + [(f"{loc}.node", x.node) for loc, x in _instances(t)]
    for field, name in refs:
        if name is None:
            continue
        if not t.nodes:
            problems.append((field, f"names node {name!r} but the target lists no nodes; add `nodes` or drop it"))
        elif name not in names:
            problems.append((field, f"no node is named {name!r}; name one of {', '.join(names)}"))
    return problems


def node_mooncake_config_valid(t: Target) -> list[Problem]:
    """A node's mooncake.json fields are mooncake.json fields: a typo there would be written as it is."""
    problems: list[Problem] = []
    for i, n in enumerate(t.nodes):
        try:
            t.mooncake_json(n)
        except ValidationError as e:
            for err in e.errors():
                key = ".".join(map(str, err["loc"]))
                msg = "unknown mooncake.json key" if err["type"] == "extra_forbidden" else err["msg"]
                problems.append((f"nodes[{i}].mooncake_config.{key}", msg))
    return problems


def _known_nodes(t: Target) -> bool:
    """Every node reference resolves (else nodes_named_and_known has said so and these checks would only echo it)."""
    try:
        t.master_node()
        for x in t.instances:
            t.node_of(x)
        for n in t.nodes:
            t.mooncake_json(n)
    except (KeyError, ValidationError):
        return False
    return True


def master_address_on_master_node(t: Target) -> list[Problem]:
    """Across nodes, every connector reaches the master at master_server_address: it must be the master's node's
    address. Loopback there is each node's own loopback, where no master listens (the instances of the other node
    fail with "Initialize mooncake failed"); a master bound to loopback is unreachable from the other node."""
    if not t.multi_node or not _known_nodes(t):
        return []
    home = t.master_node()
    problems: list[Problem] = []
    for n in t.nodes:
        if not t.instances_on(n):
            continue
        host = t.mooncake_json(n).master_server_address.rpartition(":")[0]
        if host != home.address:
            where = "loopback, which on node " + n.name + " is not the master's node" if _is_loopback(host) else host
            problems.append((_node_field(t, n, "master_server_address"),
                             f"node {n.name}'s connectors would look for the master at {where}, but it runs on node "
                             f"{home.name} ({home.address}); use {home.address}:{t.mooncake.master.port}"))
    bind = _gflag(t.mooncake.master.command, "rpc_address")
    if bind is not None and _is_loopback(bind):
        problems.append(("mooncake.master.command",
                         f"--rpc_address={bind} binds loopback: the instances on other nodes cannot reach the master; "
                         f"bind {home.address} (node {home.name}'s address)"))
    return problems


# Where a pooled instance says its segment is, in the order its connector looks: vLLM's MooncakeStoreConnector reads
# MOONCAKE_REQUESTER_LOCAL_HOSTNAME, then mooncake.json's local_hostname; vllm-ascend's takes vLLM's get_ip(), which is
# VLLM_HOST_IP when set.
_SEGMENT_ADDRESS_ENV = ("MOONCAKE_REQUESTER_LOCAL_HOSTNAME", "VLLM_HOST_IP")


def pool_addresses_reachable_across_nodes(t: Target) -> list[Problem]:
    """A pooled instance publishes its segment at an address the peers on the other node will connect to: loopback, or
    another node's address, sends them to the wrong place and every cross-node transfer fails. Unset, vllm-ascend takes
    the address of the route to 8.8.8.8, which on a server with several networks may be one the other node cannot
    reach (the successor guide sets none)."""
    if not t.multi_node or not _known_nodes(t):
        return []
    others = {n.address: n.name for n in t.nodes}
    problems: list[Problem] = []
    for loc, x in _pooled(t):
        node = t.node_of(x)
        var = next((v for v in _SEGMENT_ADDRESS_ENV if v in x.env), None)
        host = x.env[var] if var else t.mooncake_json(node).local_hostname
        field = f"{loc}.env.{var}" if var else _node_field(t, node, "local_hostname")
        if host is None:
            problems.append((f"{loc}.env", f"nothing names {x.name}'s segment address on node {node.name}: the "
                                           "connector takes the route to 8.8.8.8, maybe an address the other node "
                                           f"cannot reach; set VLLM_HOST_IP (vllm-ascend) or local_hostname to "
                                           f"{node.address}"))
        elif _is_loopback(host):
            problems.append((field, f"{host} is loopback: {x.name}'s segment on node {node.name} is unreachable from "
                                    f"the other nodes; use {node.address}"))
        elif others.get(host, node.name) != node.name:
            problems.append((field, f"{host} is node {others[host]}'s address, but {x.name} runs on node {node.name}; "
                                    f"use {node.address}"))
    return problems


def npu_ips_unique(t: Target) -> list[Problem]:
    """Two NPUs with one IP in one subnet (a copied hccn.conf, the second node set up like the first) answer each
    other's RoCE traffic: the cross-node ping passes and transfers go astray. Checked on the emulator's state here;
    on real NPUs stage 1 reads the addresses."""
    seen: dict[ipaddress.IPv4Interface, str] = {}
    problems: list[Problem] = []
    for field, npu in _npus(t):
        for d, dev in (npu.emulator.devices.items() if npu.emulator else []):
            if dev.ip is None:
                continue
            try:
                ip = ipaddress.IPv4Interface(f"{dev.ip}/{dev.netmask}")
            except ValueError:
                problems.append((f"{field}.emulator.devices.{d}.ip", f"{dev.ip}/{dev.netmask} is not an IPv4 address"))
                continue
            if ip in seen:
                problems.append((f"{field}.emulator.devices.{d}.ip",
                                 f"{dev.ip} is also {seen[ip]} in subnet {ip.network}; each NPU needs its own address"))
            seen.setdefault(ip, f"{field}.emulator.devices.{d}")
    return problems


def built_image_on_local_nodes(t: Target) -> list[Problem]:
    """The suite builds container.build's image on this machine's daemon only: a node on another daemon would
    start from an image it does not have."""
    if t.container.build is None:
        return []
    return [(f"nodes[{i}].docker", f"is {n.docker}, but container.build makes the image on this machine only; load "
                                   f"{t.container.image} on that node and drop container.build, or run the node here")
            for i, n in enumerate(t.nodes) if n.docker != "local"]


def network_holds_nodes(t: Target) -> list[Problem]:
    """cpu-local-2node: each node's container joins the network the suite creates, at the node's address, so the
    address must be a host of its subnet (not the gateway docker takes), each node's its own; the nodes must be on
    the local daemon (a bridge network lives on one daemon); and the containers must use it (network_mode)."""
    net = t.network
    if net is None:
        return []
    try:
        subnet = ipaddress.IPv4Network(net.subnet)
    except ValueError as e:
        return [("network.subnet", f"{net.subnet} is not an IPv4 subnet ({e})")]
    problems: list[Problem] = []
    if not t.nodes:
        problems.append(("network", "a network for the nodes needs `nodes`; drop it or list the nodes"))
    if t.container.network_mode != net.name:
        problems.append(("container.network_mode", f"is {t.container.network_mode!r}; with `network` the nodes' "
                                                   f"containers join it: set it to {net.name!r}"))
    gateway = next(subnet.hosts(), None)
    seen: dict[str, str] = {}
    for i, n in enumerate(t.nodes):
        try:
            addr = ipaddress.IPv4Address(n.address)
        except ValueError:
            problems.append((f"nodes[{i}].address", f"{n.address} is not an IPv4 address on {net.subnet}"))
            continue
        if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address):
            problems.append((f"nodes[{i}].address", f"{n.address} is not a host of network.subnet {net.subnet}"))
        elif addr == gateway:
            problems.append((f"nodes[{i}].address", f"{n.address} is the gateway docker gives the network's bridge"))
        elif n.address in seen:
            problems.append((f"nodes[{i}].address", f"{n.address} is also {seen[n.address]}'s"))
        seen.setdefault(n.address, n.name)
        if n.docker != "local":
            problems.append((f"nodes[{i}].docker", f"is {n.docker}; the suite's network lives on this machine's "
                                                   "daemon only, so every node of a `network` must be local"))
    return problems


# In the order their problems are reported. Each takes the target; pool_memory_fits_host also the host's memory.
TRAPS: list[Callable[..., list[Problem]]] = [
    nodes_named_and_known,
    node_mooncake_config_valid,
    network_holds_nodes,
    built_image_on_local_nodes,
    master_address_on_master_node,
    pool_addresses_reachable_across_nodes,
    npu_ips_unique,
    metrics_port_is_not_rpc_port,
    ports_unique,
    master_command_matches_ports,
    master_address_matches_port,
    instance_names_unique,
    no_owned_flags_in_args,
    visible_devices_known_and_unshared,
    visible_devices_env_agrees,
    mooncake_config_path_agrees,
    rpc_ports_unique,
    lookup_rpc_ports_unique,
    ascend_store_backend_is_mooncake,
    pool_keys_agree,
    kv_shaping_flags_agree,
    hash_seeds_agree,
    comparisons_valid,
    eviction_seed_differs,
    resilience_seed_differs,
    roles_name_two_instances,
    probe_settings_usable,
    evidence_sources_usable,
    prompt_details_enabled,
    master_flags_known_to_version,
    lease_outlasts_transfer_timeout,
    pool_memory_fits_host,
    emulator_covers_devices,
    model_volume_mounted,
]


def check_all(t: Target, host_memory: int | None = None) -> list[Problem]:
    """Every trap's problems, in TRAPS order. `host_memory` (bytes): check that the pool fits in it; None skips that
    check (a target validated away from its host)."""
    problems: list[Problem] = []
    for trap in TRAPS:
        problems += trap(t, host_memory) if trap is pool_memory_fits_host else trap(t)
    return problems

"""The deployment target: a typed model of one target YAML, loading, and validation of the known traps.

A target describes the seed's deployment shape: one container, a Mooncake master, a mooncake.json,
and vLLM instances sharing KV cache through the pool, plus the benchmark and its thresholds.
Shape and ranges are checked by pydantic; the traps that span several fields (ports, pool keys, the master's lease,
rpc ports, pool memory against the host) are checked afterwards by `_trap_checks`, so every problem names the
field it is about.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.names import (
    COLD,
    CROSS_INSTANCE_FRACTION,
    CROSS_INSTANCE_HIT,
    EVICT,
    LOCAL_HIT,
    LOCAL_HIT_FRACTION,
    THRESHOLDS,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

Port = Field(ge=1, le=65535)
NET_HEALTH_VALUES = (
    "Success", "Socket fail", "Receive timeout", "Unreachable", "Time exceeded",
    "Fault", "Init", "Thread error", "Detect ip set", "Unknown",
)


class ConfigError(Exception):
    """A target that cannot be used; `problems` are (field, message) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        listed = " ".join(f"[{n}] {field}: {message}." for n, (field, message) in enumerate(problems, 1))
        super().__init__(f"target {source} is not valid, {len(problems)} problem(s): {listed}")


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in a YAML key must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Volume(_Strict):
    host: str  # relative paths are relative to the repository root
    container: str
    mode: Literal["rw", "ro"] = "rw"

    def host_path(self) -> Path:
        return resolve_repo_path(self.host)


class Container(_Strict):
    image: str
    # A folder of this repository holding an image recipe: the image is built locally and tagged
    # `<image>:<hash of the recipe's inputs>` (cpu-local). None: the image must already exist (Atlas).
    build: str | None = None
    name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
    network_mode: str = "host"
    shm_size: str = Field(pattern=r"^\d+[bkmg]?$")
    init: bool = True
    devices: list[str] = []
    volumes: list[Volume] = []
    env: dict[str, str] = {}
    # --build-arg values for the recipe (part of the image tag). EXTRA_WHEELS: pins installed over the lock,
    # downloaded into the wheelhouse like the rest, e.g. another Mooncake.
    build_args: dict[str, str] = {}
    # The container only has to stay up: the suite execs the master and the instances into it.
    command: list[str] = ["sleep", "infinity"]
    workdir: str | None = None
    start_timeout_s: float = Field(default=60, gt=0)


class EmulatedDevice(_Strict):
    """One emulated NPU's network state, as hccn_tool and npu-smi will report it."""

    ip: str | None = None  # None: `-ip -g` says no ip was preset
    netmask: str = "255.255.255.0"
    netdetect: str | None = None
    gateway: str | None = None
    ifname: str | None = None  # lldp Port ID TLV; None: no lldp neighbour
    link: Literal["UP", "DOWN"] = "UP"
    net_health: str = "Success"
    conf_ip: str | None = None  # the address hccn.conf gives, when it should disagree with `ip`
    health: str = "OK"  # npu-smi Health column

    @field_validator("net_health")
    @classmethod
    def _known_health(cls, value: str) -> str:
        if value not in NET_HEALTH_VALUES:
            raise ValueError(f"must be one of {', '.join(NET_HEALTH_VALUES)}")
        return value


class Emulator(_Strict):
    """State of the cpu-local NPU emulator; read at run time, so a fault is a YAML change."""

    chip: str = "910B4"
    hccn_conf: bool = True  # False: /etc/hccn.conf is absent
    devices: dict[int, EmulatedDevice]


class Npu(_Strict):
    devices: list[int] = Field(min_length=1)
    hccn_tool: str = "/usr/local/Ascend/driver/tools/hccn_tool"
    npu_smi: str = "/usr/local/bin/npu-smi"
    hccn_conf: str = "/etc/hccn.conf"
    checks_in: Literal["container", "host"] = "container"
    # `Init` means netdetect has nothing to probe; Ascend's exporter counts it healthy, we do not.
    healthy_net_health: list[str] = ["Success"]
    visible_devices_env: str = "ASCEND_RT_VISIBLE_DEVICES"
    emulator: Emulator | None = None


class Master(_Strict):
    command: list[str] = Field(min_length=1)
    host: str = "127.0.0.1"
    port: int = Port
    metrics_port: int = Field(default=9003, ge=1, le=65535)  # mooncake_master's default
    ready_timeout_s: float = Field(default=30, gt=0)


class MooncakeJson(_Strict):
    """Every field of mooncake.json; None fields are left out of the rendered file."""

    local_hostname: str
    metadata_server: str = "P2PHANDSHAKE"
    protocol: str
    device_name: str = ""
    use_ascend_direct: bool | None = None
    alloc_in_same_node: bool | None = None
    master_server_address: str
    global_segment_size: int = Field(ge=0)
    local_buffer_size: int | None = Field(default=None, ge=0)
    # vLLM's MooncakeStoreConnector: "embedded" (each instance contributes global_segment_size) or
    # "standalone-store" (segment 0, a separate mooncake_client holds the pool).
    mode: Literal["embedded", "standalone-store"] | None = None
    enable_offload: bool | None = None
    tenant_id: str | None = None

    def render(self) -> str:
        return json.dumps(self.model_dump(exclude_none=True), indent=2) + "\n"


# Log lines that mean a KV transfer to or from the pool failed (vLLM's Mooncake store worker and
# vllm-ascend's connector). A failed load is recomputed, so TTFT alone can hide it: the logs cannot.
DEFAULT_TRANSFER_FAILURES = [
    r"(?i)failed to (put|get|load|check)\b",
    r"(?i)batch_(put|get)\w* failed",
    r"(?i)put failed for request",
    r"(?i)skipping mooncake load",
    r"(?i)remote connection failed",
    r"(?i)register_buffer failed",
    r"(?i)transfer(ring)? (failed|error|timed? ?out)",
    # vllm-ascend 0.11 (the seed's connector) and vLLM 0.32, their sources' wording (read 2026-12-01):
    r"(?i)initiali[sz]e mooncake\w* failed",  # "Initialize mooncake failed.", "Initialize MooncakeDistributedStore ..."
    r"(?i)transferengine initiali[sz]ation failed",  # "TransferEngine initialization failed with ret_value: N"
    r"(?i)memory registration failed",  # "Mooncake memory registration failed. Error is: ..."
    r"(?i)error in kvcachetransferthread",  # vllm-ascend's transfer thread caught an exception
    r"(?i)layerwise (get|put|load|save)\w* failed",  # "Layerwise get failed"
    r"(?i)mooncake lookup failed",  # vLLM 0.32: "Async Mooncake lookup failed for <req>: <error>"
]


# Defaults of the mooncake_master versions the suite meets, from their `--help` (measured 2026-12-01): the
# checks that depend on an unset flag run only when mooncake.version names one of these.
MOONCAKE_MASTER_DEFAULTS: dict[str, dict[str, Any]] = {
    # --default_kv_lease_ttl is a plain uint64 of ms; no --metrics_host (the admin server binds 0.0.0.0).
    "0.3.7.post2": {"default_kv_lease_ttl_ms": 5000, "lease_units": False, "flags_absent": ("--metrics_host",)},
    # --default_kv_lease_ttl "10000", units ms/s/m/h accepted; has --metrics_host.
    "0.3.13.post1": {"default_kv_lease_ttl_ms": 10000, "lease_units": True, "flags_absent": ()},
}


class Mooncake(_Strict):
    # The Mooncake of the image (mooncake-transfer-engine), e.g. "0.3.7.post2". Optional: when it is one of
    # MOONCAKE_MASTER_DEFAULTS, validation also knows the master's defaults and flags.
    version: str | None = None
    master: Master
    config_path: str  # where mooncake.json is written in the container (MOONCAKE_CONFIG_PATH)
    config: MooncakeJson
    transfer_failure_patterns: list[str] = DEFAULT_TRANSFER_FAILURES

    @field_validator("transfer_failure_patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"{p!r} is not a valid regular expression: {e}") from None
        return patterns


class ModelBuild(_Strict):
    recipe: str  # folder of this repository with the model builder
    output: str  # host folder the model is built into (cached there)


class Model(_Strict):
    path: str  # as the instances see it; a pool key includes this exact string
    served_name: str
    build: ModelBuild | None = None


class KvTransferConfig(_Strict):
    kv_connector: str
    kv_role: Literal["kv_producer", "kv_consumer", "kv_both"]
    kv_connector_extra_config: dict[str, Any] = {}
    kv_connector_module_path: str | None = None
    engine_id: str | None = None

    def render(self) -> str:
        return json.dumps(self.model_dump(exclude_none=True), separators=(",", ":"))


class Instance(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
    host: str
    port: int = Port
    visible_devices: list[int] = Field(min_length=1)
    env: dict[str, str] = {}
    setup: list[str] = []  # scripts sourced before `vllm serve` (the seed's set_env.sh files)
    model_path: str | None = None  # None: the target's model.path
    served_model_name: str | None = None  # None: model.served_name, the name clients ask for
    args: list[str] = []  # `vllm serve` arguments besides model, name, host, port, kv-transfer-config
    kv_transfer_config: KvTransferConfig | None = None
    ready_timeout_s: float = Field(default=600, gt=0)

    def arg(self, *names: str, default: str | None = None) -> str | None:
        """The value of a `vllm serve` flag in args (`--flag V` or `--flag=V`)."""
        for i, token in enumerate(self.args):
            flag, eq, value = token.partition("=")
            if flag in names:
                if eq:
                    return value
                return self.args[i + 1] if i + 1 < len(self.args) else None
        return default


Step = Literal[COLD, EVICT, LOCAL_HIT, CROSS_INSTANCE_HIT]  # harness/names.py


class Comparison(_Strict):
    """`metric(target) operator ratio x metric(baseline)`, e.g. mean TTFT of cross_instance_hit < 0.45 x cold."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_.-]+$")
    metric: Literal["mean_ttft", "median_ttft", "p90_ttft", "p99_ttft"] = "mean_ttft"
    baseline: Step = "cold"
    target: Step
    ratio: float = Field(gt=0)
    operator: Literal["<", "<=", ">", ">="] = "<"


class Correctness(_Strict):
    """The correctness probe (harness/probe.py), run after the seed's steps with prompts of its own, one
    request in flight at a time. The pool hit on instance 2 must give the greedy token ids of the local hit
    on instance 1: the same KV bytes and the same compute shape. A batched cold step against a batched hit
    is not like with like (vLLM is not batch-invariant, NPU kernels are not bit-exact)."""

    mode: Literal["probe", "off"] = "probe"
    num_prompts: int = Field(default=8, ge=1, le=64)
    # Not a multiple of the block size: the last, partial block is never pooled and both hits recompute it.
    input_len: int = Field(default=1000, gt=0)
    output_len: int = Field(default=16, ge=1)  # greedy tokens compared
    seed: int = 1  # must differ from benchmark.seed and the eviction seed: the probe's prompts are its own
    # Prompts whose two hits were not hits of the same length compare nothing; more than this fails the test.
    max_inconclusive: int = Field(default=1, ge=0)
    # Cold against pool hit, as vLLM's check_logprobs_close: at the first differing token each side's token
    # must be among the other's top_logprobs. The token ids come from the same logprobs.
    top_logprobs: int = Field(default=5, ge=1, le=20)
    cold_vs_pool_gates: bool = True


class Eviction(_Strict):
    """The seed's successor guide: before step 2, send dataset B (same shape, other seed) to instance 1
    so dataset A leaves its device cache and step 2 measures the pool, not the local prefix cache."""

    seed: int
    num_prompts: int | None = Field(default=None, gt=0)  # None: benchmark.num_prompts


class Roles(_Strict):
    """Which instance plays which part of the seed's steps, by name: `first` serves step 1 (cold) and step 2 (local
    hit), `peer` step 3 (the cross-instance hit). Unset: the first instance, then the next one."""

    first: str | None = None
    peer: str | None = None


class Benchmark(_Strict):
    dataset: Literal["random-chars"] = "random-chars"
    input_len: int = Field(gt=0)  # tokens, as the served tokenizer counts them
    output_len: int = Field(gt=0)
    num_prompts: int = Field(gt=0)
    concurrency: int = Field(gt=0)
    seed: int = 0
    request_timeout_s: float = Field(default=600, gt=0)
    eviction: Eviction | None = None
    correctness: Correctness = Correctness()
    comparisons: list[Comparison] = []  # checks beyond the two thresholds; a new one needs no code
    # Where step 3's proof that its KV came from the pool is read (harness/evidence.py); every one declared must
    # show it. Choose the ones the target's versions have: vLLM 0.11 has no external_hits counter.
    evidence: list[Literal["external_hits", "cached_tokens", "master_gets", "connector_log"]] = [
        "cached_tokens", "master_gets"]
    roles: Roles = Roles()


class Thresholds(_Strict):
    # Upper bounds on mean TTFT as a fraction of the cold mean TTFT (step 1).
    cross_instance_ttft_fraction: float = Field(gt=0, le=1)
    local_hit_ttft_fraction: float = Field(gt=0, le=1)


class Target(_Strict):
    name: str
    description: str = ""
    container: Container
    npu: Npu
    mooncake: Mooncake
    model: Model
    instances: list[Instance] = Field(min_length=1)
    benchmark: Benchmark
    thresholds: Thresholds

    def model_path(self, instance: Instance) -> str:
        return instance.model_path if instance.model_path is not None else self.model.path

    def roles(self) -> tuple[Instance, Instance]:
        """(first, peer): the instance of steps 1 and 2 and the one of step 3 (benchmark.roles)."""
        by_name = {x.name: x for x in self.instances}
        r = self.benchmark.roles
        first = by_name[r.first] if r.first in by_name else self.instances[0]
        peer = by_name.get(r.peer or "") or next((x for x in self.instances if x is not first), None)
        if peer is None or peer is first:
            raise ValueError(f"target {self.name}: the KV pool steps need two instances (benchmark.roles)")
        return first, peer

    def comparisons(self) -> list[Comparison]:
        """The two threshold checks of the seed's steps, then the ones the YAML declares."""
        th = self.thresholds
        return [
            Comparison(name=LOCAL_HIT_FRACTION, baseline=COLD, target=LOCAL_HIT, ratio=th.local_hit_ttft_fraction),
            Comparison(name=CROSS_INSTANCE_FRACTION, baseline=COLD, target=CROSS_INSTANCE_HIT,
                       ratio=th.cross_instance_ttft_fraction),
            *self.benchmark.comparisons,
        ]


# vLLM defaults when a flag is absent (a pool key differs if one instance sets it and one does not).
_TP_FLAGS = ("--tensor-parallel-size", "-tp")
_BLOCK_FLAGS = ("--block-size",)
# Flags the suite renders from typed fields; in `args` they would contradict those fields.
_OWNED_FLAGS = {
    "--host": "host", "--port": "port", "--served-model-name": "model.served_name",
    "--kv-transfer-config": "kv_transfer_config",
}


# Flags that change the KV a model computes but that no pool key includes (model path, TP, block size and
# token hashes are in the key; these are not).
_KV_SHAPING_FLAGS = ("--hf-overrides", "--dtype", "--kv-cache-dtype", "--quantization", "--revision")
PROMPT_DETAILS_FLAG = "--enable-prompt-tokens-details"  # usage.prompt_tokens_details.cached_tokens


def _prompt_details_checks(t: Target, pooled: list[tuple[str, Instance]]) -> list[tuple[str, str]]:
    """usage.prompt_tokens_details.cached_tokens exists only with --enable-prompt-tokens-details."""
    users = ([] if t.benchmark.correctness.mode == "off" else ["the correctness probe (benchmark.correctness)"]) + (
        ["the cached_tokens evidence source (benchmark.evidence)"] if "cached_tokens" in t.benchmark.evidence else [])
    return [(f"{loc}.args", f"lacks {PROMPT_DETAILS_FLAG}, which {' and '.join(users)} read each request's cached "
                            "tokens from (usage.prompt_tokens_details.cached_tokens); add the flag")
            for loc, x in pooled if users and PROMPT_DETAILS_FLAG not in x.args]


def _evidence_checks(t: Target, pooled: list[tuple[str, Instance]]) -> list[tuple[str, str]]:
    """Step 3 must have at least one source that can prove its KV came from the pool, each one usable."""
    sources = t.benchmark.evidence
    if not sources:
        return [("benchmark.evidence", "is empty: nothing could prove that step 3's KV came from the pool, so its "
                                       "verdict would rest on TTFT alone; declare at least one of external_hits, "
                                       "cached_tokens, master_gets, connector_log")]
    problems: list[tuple[str, str]] = []
    if len(set(sources)) != len(sources):
        problems.append(("benchmark.evidence", f"names a source twice: {sources}"))
    for loc, x in pooled:
        debug = x.env.get("VLLM_LOGGING_LEVEL", "INFO").upper() == "DEBUG"
        if ("connector_log" in sources and x.kv_transfer_config.kv_connector == "MooncakeStoreConnector"
                and not debug):
            problems.append(("benchmark.evidence", f"connector_log: {x.name}'s MooncakeStoreConnector (vLLM's own) "
                                                   "logs its per-request hit line at DEBUG only; drop the source or "
                                                   f"set {loc}.env.VLLM_LOGGING_LEVEL DEBUG"))
    return problems


def _role_checks(t: Target) -> list[tuple[str, str]]:
    """benchmark.roles must name two different instances of the target."""
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


def _probe_checks(t: Target, pooled: list[tuple[str, Instance]]) -> list[tuple[str, str]]:
    """The correctness probe's own prompts must be fresh, long enough to hit, and measurable."""
    c, b = t.benchmark.correctness, t.benchmark
    if c.mode == "off":
        return []
    problems: list[tuple[str, str]] = []
    taken = {"benchmark.seed": b.seed} | ({"benchmark.eviction.seed": b.eviction.seed} if b.eviction else {})
    for field, seed in taken.items():
        if c.seed == seed:
            problems.append(("benchmark.correctness.seed", f"equals {field}: the probe's prompts would be prefixes "
                                                           "of a dataset already sent, so its cold run is no cold run"))
    if pooled:  # pooled instances agree on these (checked above), so the first one speaks for all
        loc, x = pooled[0]
        block, limit = x.arg(*_BLOCK_FLAGS), x.arg("--max-model-len")
        if block is not None and block.isdigit() and c.input_len <= int(block):
            problems.append(("benchmark.correctness.input_len", f"{c.input_len} tokens hold no full block of "
                                                                f"{block} ({loc}.args --block-size): nothing can hit"))
        if limit is not None and limit.isdigit() and c.input_len + c.output_len > int(limit):
            problems.append(("benchmark.correctness.input_len",
                             f"{c.input_len} + output_len {c.output_len} exceeds {loc}.args --max-model-len {limit}"))
    return problems


def resolve_repo_path(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else ROOT / p


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


_DURATION_MS = {None: 1, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def _master_version_checks(t: Target) -> list[tuple[str, str]]:
    """Flags of mooncake.master.command that the target's Mooncake version refuses: its master exits at start."""
    version = t.mooncake.version
    known = MOONCAKE_MASTER_DEFAULTS.get(version or "")
    if known is None:
        return []
    problems: list[tuple[str, str]] = []
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


def _lease_checks(t: Target, pooled: list[tuple[str, Instance]]) -> list[tuple[str, str]]:
    """The master's KV lease must outlast the instances' transfer timeout: a get holds a lease from the master's
    answer until its transfer ends, and a lease that runs out first fails the get with LEASE_EXPIRED (-707)."""
    command = t.mooncake.master.command
    text = _gflag(command, "default_kv_lease_ttl")
    known = MOONCAKE_MASTER_DEFAULTS.get(t.mooncake.version or "")
    if text is not None:
        if known is not None and not known["lease_units"] and not text.strip().isdigit():
            return []  # this version's master refuses it: _master_version_checks says so
        m = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h)?\s*", text)
        if m is None:
            return [("mooncake.master.command", f"--default_kv_lease_ttl {text!r} is not a duration; "
                                                "give milliseconds, e.g. --default_kv_lease_ttl=10000")]
        lease, source = int(m.group(1)) * _DURATION_MS[m.group(2)], f"--default_kv_lease_ttl {text}"
    elif known is not None:
        lease, source = known["default_kv_lease_ttl_ms"], f"mooncake_master {t.mooncake.version}'s default"
    else:
        return []  # neither given nor a known version's default: nothing to compare
    timeouts = [(int(x.env["ASCEND_TRANSFER_TIMEOUT"]), loc) for loc, x in pooled
                if x.env.get("ASCEND_TRANSFER_TIMEOUT", "").strip().isdigit()]
    if not timeouts:
        return []
    timeout, loc = max(timeouts, key=lambda pair: pair[0])
    if lease >= timeout:
        return []
    return [("mooncake.master.command",
             f"the master's KV lease is {lease} ms ({source}) but {loc}.env.ASCEND_TRANSFER_TIMEOUT is {timeout} ms: "
             "under load a transfer outlives its lease and the get fails with LEASE_EXPIRED (-707), the KV is "
             f"recomputed; pass --default_kv_lease_ttl={timeout} or more (milliseconds)")]


VLLM_ASCEND_STORE_CONNECTOR = "MooncakeConnectorStoreV1"  # vllm-ascend 0.11's connector (the seed's)
# vllm-ascend 0.11 defaults when mooncake.json leaves them out (read in its config reader, 2026-12-01).
VLLM_ASCEND_LOCAL_BUFFER_DEFAULT = 1073741824
_PP_FLAGS = ("--pipeline-parallel-size", "-pp")
GiB = 1 << 30


def _gib(n: float) -> str:
    return f"{n / GiB:.0f} GiB" if n % GiB == 0 else f"{n / GiB:.1f} GiB"


def host_memory_bytes(meminfo: str | Path = "/proc/meminfo") -> int | None:
    """MemTotal of this machine in bytes, None when it cannot be read."""
    try:
        text = Path(meminfo).read_text()
    except OSError:
        return None
    m = re.search(r"(?m)^MemTotal:\s+(\d+)\s*kB", text)
    return int(m.group(1)) * 1024 if m else None


def _pool_memory_checks(t: Target, pooled: list[tuple[str, Instance]], host_memory: int) -> list[tuple[str, str]]:
    """Every rank of a pooled instance registers its own global_segment_size (embedded mode) and local buffer in
    host memory; together they must fit in the host's RAM or registration fails at start-up."""
    cfg = t.mooncake.config
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


def _trap_checks(t: Target, host_memory: int | None = None) -> list[tuple[str, str]]:
    """Cross-field traps, each reported as (field, what is wrong and how to fix it). `host_memory` (bytes): check
    that the pool fits in it; None skips that check (a target validated away from its host)."""
    problems: list[tuple[str, str]] = []
    inst = [(f"instances[{i}]", x) for i, x in enumerate(t.instances)]

    # Every listening port of the deployment (host network: they share one namespace).
    m = t.mooncake.master
    if m.port == m.metrics_port:
        problems.append(("mooncake.master.metrics_port",
                         f"equals the master RPC port {m.port}; the admin HTTP server cannot bind it "
                         "(the master exits); give it another port (mooncake_master's default is 9003)"))
    ports: dict[int, str] = {m.port: "mooncake.master.port"}
    if m.metrics_port != m.port:
        ports[m.metrics_port] = "mooncake.master.metrics_port"
    for loc, x in inst:
        if x.port in ports:
            problems.append((f"{loc}.port", f"{x.port} is also {ports[x.port]}; give each its own port"))
        else:
            ports[x.port] = f"{loc}.port"

    # The master's command and its typed port must agree: the suite probes the typed ones.
    for flag, field, want in (("--rpc_port", "port", m.port), ("--metrics_port", "metrics_port", m.metrics_port)):
        given = _flag_value(m.command, flag) or (_flag_value(m.command, "--port") if flag == "--rpc_port" else None)
        if given is not None and given != str(want):
            problems.append(("mooncake.master.command",
                             f"sets {flag} {given} but mooncake.master.{field} is {want}; make them equal"))
    host, _, port = t.mooncake.config.master_server_address.rpartition(":")
    if port != str(m.port):
        problems.append(("mooncake.config.master_server_address",
                         f"points at port {port or '?'} but the master listens on {m.port}; "
                         f"use {host or m.host}:{m.port}"))

    names: dict[str, str] = {}
    rpc_ports: dict[str, str] = {}
    devices: dict[int, str] = {}
    for loc, x in inst:
        if x.name in names:
            problems.append((f"{loc}.name", f"{x.name!r} is also {names[x.name]}; names must be unique"))
        names.setdefault(x.name, f"{loc}.name")
        for flag, field in _OWNED_FLAGS.items():
            if x.arg(flag) is not None or flag in x.args:
                problems.append((f"{loc}.args", f"contains {flag}; set {field} instead"))
        for d in x.visible_devices:
            if d not in t.npu.devices:
                problems.append((f"{loc}.visible_devices", f"device {d} is not in npu.devices {t.npu.devices}"))
            elif d in devices:
                problems.append((f"{loc}.visible_devices", f"device {d} is also used by {devices[d]}"))
            else:
                devices[d] = x.name
        env_visible = x.env.get(t.npu.visible_devices_env)
        want_visible = ",".join(map(str, x.visible_devices))
        if env_visible is not None and env_visible != want_visible:
            problems.append((f"{loc}.env.{t.npu.visible_devices_env}",
                             f"is {env_visible!r} but visible_devices is [{want_visible}]; "
                             "drop it from env (the suite sets it from visible_devices)"))
        cfg_path = x.env.get("MOONCAKE_CONFIG_PATH")
        if x.kv_transfer_config is not None and cfg_path != t.mooncake.config_path:
            problems.append((f"{loc}.env.MOONCAKE_CONFIG_PATH",
                             f"is {cfg_path!r} but mooncake.json is written to {t.mooncake.config_path!r} "
                             "(mooncake.config_path); the connector would read another file"))
        if x.kv_transfer_config is not None:
            rpc = x.kv_transfer_config.kv_connector_extra_config.get("mooncake_rpc_port")
            if rpc is not None:
                if str(rpc) in rpc_ports:
                    problems.append((f"{loc}.kv_transfer_config.kv_connector_extra_config.mooncake_rpc_port",
                                     f"{rpc!r} is also {rpc_ports[str(rpc)]}; instances in one container "
                                     "bind an IPC socket named after it and collide: give each its own port"))
                rpc_ports.setdefault(str(rpc), x.name)

    # Instances sharing the pool must key KV the same way: identical model path string, TP size and
    # block size (the pool key is model path @ world size @ worker @ chunk hash).
    pooled = [(loc, x) for loc, x in inst if x.kv_transfer_config is not None]
    if pooled:
        (first_loc, first) = pooled[0]
        keys = {
            "model path": (lambda x: t.model_path(x), "model_path"),
            "tensor parallel size": (lambda x: x.arg(*_TP_FLAGS, default="1"), "args --tensor-parallel-size"),
            "block size": (lambda x: x.arg(*_BLOCK_FLAGS, default="(vLLM default)"), "args --block-size"),
        }
        for what, (get, field) in keys.items():
            for loc, x in pooled[1:]:
                if get(x) != get(first):
                    problems.append((f"{loc}.{field}",
                                     f"{what} {get(x)!r} differs from {first_loc} ({first.name}) {get(first)!r}; "
                                     "instances sharing a pool must match exactly or they never hit each "
                                     "other's KV (pool keys include it)"))

        # What changes the KV an instance computes but is in no pool key: the pool would hand one
        # instance KV that is wrong for the other, and outputs would silently differ.
        for flag in _KV_SHAPING_FLAGS:
            for loc, x in pooled[1:]:
                if x.arg(flag) != first.arg(flag):
                    problems.append((f"{loc}.args {flag}",
                                     f"{x.arg(flag)!r} differs from {first_loc} ({first.name}) {first.arg(flag)!r}; "
                                     "pool keys do not include it, so the pool would serve KV computed by another "
                                     "model: give instances sharing a pool the same value"))

    names_seen = set(THRESHOLDS)
    for i, c in enumerate(t.benchmark.comparisons):
        if c.name in names_seen:
            problems.append((f"benchmark.comparisons[{i}].name", f"{c.name!r} is already used; names must be unique"))
        names_seen.add(c.name)
        if "evict" in (c.baseline, c.target) and t.benchmark.eviction is None:
            problems.append((f"benchmark.comparisons[{i}]", "uses the evict step but benchmark.eviction is not set"))
        if c.baseline == c.target:
            problems.append((f"benchmark.comparisons[{i}]", f"compares {c.target} with itself"))
    if t.benchmark.eviction is not None and t.benchmark.eviction.seed == t.benchmark.seed:
        problems.append(("benchmark.eviction.seed", "equals benchmark.seed: dataset B would be dataset A"))
    problems += _role_checks(t)
    problems += _probe_checks(t, pooled)
    problems += _evidence_checks(t, pooled)
    problems += _prompt_details_checks(t, pooled)
    problems += _master_version_checks(t)
    problems += _lease_checks(t, pooled)
    if host_memory is not None:
        problems += _pool_memory_checks(t, pooled, host_memory)

    # The emulator must describe every NPU the target checks.
    emu = t.npu.emulator
    if emu is not None:
        missing = [d for d in t.npu.devices if d not in emu.devices]
        if missing:
            problems.append(("npu.emulator.devices", f"has no state for device(s) {missing}; add them"))
    if t.model.build is not None and not any(
        v.host == t.model.build.output and t.model.path.rstrip("/").startswith(v.container.rstrip("/"))
        for v in t.container.volumes
    ):
        problems.append(("container.volumes",
                         f"no volume mounts model.build.output {t.model.build.output!r} at a folder holding "
                         f"model.path {t.model.path!r}; add one"))
    return problems


def _describe(error: dict[str, Any]) -> tuple[str, str]:
    """A pydantic error as (field path, message with the fix)."""
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        msg = "unknown key; remove it or fix its spelling"
    elif kind == "missing":
        msg = "required; add it"
    elif "input" in error:
        msg = f"{msg} (got {error['input']!r})"
    return loc or "(top level)", msg


def resolve_target_path(target: str) -> Path:
    """`--target` value: a YAML path, or the name of a file under configs/."""
    if target.endswith((".yaml", ".yml")) or "/" in target:
        return Path(target)
    return CONFIGS / f"{target}.yaml"


def available_targets() -> list[str]:
    return sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(file)"
        raise ConfigError(str(path), [(where, f"not valid YAML: {getattr(e, 'problem', e)}")]) from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), [("(top level)", "must be a mapping of target fields")])
    return data


def overlay(base: Any, over: Any) -> Any:
    """`over` laid on `base`: mappings merge key by key, a list of mappings merges item by item (instances),
    anything else is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: overlay(base[k], v) if k in base else v for k, v in over.items()}}
    if (isinstance(base, list) and isinstance(over, list) and len(base) == len(over)
            and all(isinstance(x, dict) for x in base + over)):
        return [overlay(b, o) for b, o in zip(base, over, strict=True)]
    return over


def load_target(target: str | Path, *, check_host: bool = False, host_memory: int | None = None) -> Target:
    """Load and validate a target; raise ConfigError naming every bad field and its fix.

    The checks against the machine (the pool must fit in its memory) run with `check_host` (this machine's
    /proc/meminfo) or a given `host_memory` in bytes: the run's own target is checked so (fixtures/target.py),
    while a target merely parsed here, such as the Atlas one on a smaller machine, is not.
    """
    path = resolve_target_path(str(target))
    source = str(path)
    if not path.is_file():
        raise ConfigError(source, [("--target", f"no such file; give a YAML path or one of "
                                                f"{', '.join(available_targets())}")])
    data = _read_yaml(path)
    if "extends" in data:  # another target's YAML with this file's keys laid over it
        base = resolve_target_path(str(data.pop("extends")))
        if not base.is_file() or base.resolve() == path.resolve():
            raise ConfigError(source, [("extends", f"{base} is no other target file; name one of "
                                                   f"{', '.join(available_targets())}")])
        data = overlay(_read_yaml(base), data)
    try:
        t = Target.model_validate(data)
    except ValidationError as e:
        raise ConfigError(source, [_describe(err) for err in e.errors()]) from None
    if host_memory is None and check_host:
        host_memory = host_memory_bytes()
    problems = _trap_checks(t, host_memory)
    if problems:
        raise ConfigError(source, problems)
    return t


def serve_argv(t: Target, x: Instance) -> list[str]:
    """The `vllm serve` command of an instance, as an argv list (data, never a shell string)."""
    argv = ["vllm", "serve", t.model_path(x), "--served-model-name", x.served_model_name or t.model.served_name,
            "--host", x.host, "--port", str(x.port), *x.args]
    if x.kv_transfer_config is not None:
        argv += ["--kv-transfer-config", x.kv_transfer_config.render()]
    return argv


def serve_command_text(t: Target, x: Instance) -> str:
    """The same command quoted for people to read and paste (reports, logs)."""
    return shlex.join(serve_argv(t, x))


def parse_size(text: str) -> int:
    """Docker-style size ("1g", "512m") in bytes."""
    m = re.fullmatch(r"(\d+)([bkmg]?)", text.lower())
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(m.group(1)) * {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)]

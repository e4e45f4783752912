"""The deployment target: a typed model of one target YAML, loading, and validation of the known traps.

A target describes the seed's deployment shape: one container, a Mooncake master, a mooncake.json,
and vLLM instances sharing KV cache through the pool, plus the benchmark and its thresholds.
Shape and ranges are checked by pydantic; the traps that span several fields (ports, pool keys, the master's lease,
rpc ports, pool memory against the host) are checked afterwards by harness/traps.py, one named check each, so
every problem names the field it is about.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

# traps needs this module's models only as annotations (it imports them under TYPE_CHECKING): no cycle.
from harness import hccn, traps
from harness.failure_lines import TRANSFER_FAILURES
from harness.names import (
    COLD,
    CROSS_INSTANCE_FRACTION,
    CROSS_INSTANCE_HIT,
    EVICT,
    LOCAL_HIT,
    LOCAL_HIT_FRACTION,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

Port = Field(ge=1, le=65535)
NET_HEALTH_VALUES = hccn.NET_HEALTH_STATES
# Which `-net_health -g` states pass stage 1, by the rule a target names (npu.net_health_rule, no default):
# "seed": Success only, as the seed guide's "Verify Communication Environment" asks of every NPU;
# "ascend-cluster": Success or Init, as Huawei's cluster tooling takes it: MindCluster's fault-diagnosis guide shows
# `net health status: Init` as the example of a healthy pre-training check, and the driver's DCMI docs define Init as
# "the detection task is being initialized" (e.g. no netdetect address to probe yet).
NET_HEALTH_RULES = {"seed": ("Success",), "ascend-cluster": ("Success", "Init")}


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
    # A folder of this repository whose Dockerfile builds FROM this image (build-arg BASE) what the image lacks, such
    # as the seed's Mooncake build from source (targets/atlas/mooncake): the run uses the derived image, tagged by
    # its inputs (kit/build.py). Only for an image the site brings, not with `build`.
    derive: str | None = None
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
    tls_switch: Literal[0, 1] = 0  # `-tls -g`'s switch (hccn.conf's tls_enable_N); must agree across nodes
    unreachable: list[str] = []  # addresses `-ping -g address` gets no reply from (a peer cut off)

    @field_validator("net_health")
    @classmethod
    def _known_health(cls, value: str) -> str:
        if value not in NET_HEALTH_VALUES:
            raise ValueError(f"must be one of {', '.join(NET_HEALTH_VALUES)}")
        return value


class Emulator(_Strict):
    """State of the cpu-local NPU emulator; read at run time, so a fault is a YAML change."""

    chip: str = "910B4"
    # Whose hccn_tool it prints like (spellings, streams, exit codes): "ascend910b", the A2/A3 tool of the published
    # driver source (default); "ascend950", the newer 950 generation's; "mindie-doc", the older `netdetect address:`
    # as MindIE's docs quote it (otherwise as ascend910b). See targets/cpu-local/image/npu-emulator/npu_emulator.py.
    driver: Literal["ascend910b", "ascend950", "mindie-doc"] = "ascend910b"
    hccn_conf: bool = True  # False: /etc/hccn.conf is absent
    devices: dict[int, EmulatedDevice]


class Npu(_Strict):
    devices: list[int] = Field(min_length=1)
    hccn_tool: str = "/usr/local/Ascend/driver/tools/hccn_tool"
    npu_smi: str = "/usr/local/bin/npu-smi"
    hccn_conf: str = "/etc/hccn.conf"
    checks_in: Literal["container", "host"] = "container"
    # A knowing choice, no default: "seed" (Success only) or "ascend-cluster" (Success or Init); NET_HEALTH_RULES.
    net_health_rule: Literal["seed", "ascend-cluster"]
    visible_devices_env: str = "ASCEND_RT_VISIBLE_DEVICES"
    emulator: Emulator | None = None

    @property
    def healthy_net_health(self) -> tuple[str, ...]:
        return NET_HEALTH_RULES[self.net_health_rule]


class Master(_Strict):
    command: list[str] = Field(min_length=1)
    node: str | None = None  # the node it runs on; None: the first node
    host: str = "127.0.0.1"
    port: int = Port
    metrics_port: int = Field(default=9003, ge=1, le=65535)  # mooncake_master's default
    ready_timeout_s: float = Field(default=30, gt=0)


class MooncakeJson(_Strict):
    """Every field of mooncake.json; None fields are left out of the rendered file."""

    # The segment's address for vLLM's MooncakeStoreConnector (MOONCAKE_REQUESTER_LOCAL_HOSTNAME overrides it);
    # vllm-ascend reads none and takes vLLM's get_ip() (VLLM_HOST_IP, else the address of the route to 8.8.8.8).
    local_hostname: str | None = None
    metadata_server: str = "P2PHANDSHAKE"
    protocol: str
    device_name: str = ""
    use_ascend_direct: bool | None = None
    alloc_in_same_node: bool | None = None
    master_server_address: str
    global_segment_size: int = Field(ge=0)
    local_buffer_size: int | None = Field(default=None, ge=0)
    # vllm-ascend 0.23's AscendStoreConnector (mooncake backend) reads these two for each put (mooncake_backend.py:
    # 276-321, 201-203): put into this rank's own segment first; prefer a segment of this node (its default: true).
    preferred_segment: bool | None = None
    prefer_alloc_in_same_node: bool | None = None
    # vLLM's MooncakeStoreConnector: "embedded" (each instance contributes global_segment_size) or
    # "standalone-store" (segment 0, a separate mooncake_client holds the pool).
    mode: Literal["embedded", "standalone-store"] | None = None
    enable_offload: bool | None = None
    tenant_id: str | None = None

    def render(self) -> str:
        return json.dumps(self.model_dump(exclude_none=True), indent=2) + "\n"


class Mooncake(_Strict):
    # The Mooncake of the image (mooncake-transfer-engine), e.g. "0.3.7.post2". Optional: when it is one of
    # harness.traps.MOONCAKE_MASTER_DEFAULTS, validation also knows the master's defaults and flags.
    version: str | None = None
    master: Master
    config_path: str  # where mooncake.json is written in the container (MOONCAKE_CONFIG_PATH)
    config: MooncakeJson
    # Log lines that mean a KV transfer failed (harness.failure_lines): a failed load is recomputed, so TTFT alone can
    # hide it; the logs cannot.
    transfer_failure_patterns: list[str] = TRANSFER_FAILURES

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
    # What vLLM does when the connector fails to load KV (vLLM 0.23, vllm/config/kv_transfer.py:70; default "fail": the
    # request ends with an error; "recompute": it computes the failed blocks). None: left out, vLLM's default.
    kv_load_failure_policy: Literal["recompute", "fail"] | None = None

    def render(self) -> str:
        return json.dumps(self.model_dump(exclude_none=True), separators=(",", ":"))


class DockerTls(_Strict):
    """Client certificates for a node's daemon at tcp://host:2376 (docker --tlsverify); paths on this machine."""

    ca_cert: str
    client_cert: str
    client_key: str


class Node(_Strict):
    """One server of the deployment: its docker daemon, its NPUs and the address the other nodes reach it at.
    A target without `nodes` is one implicit node (the local daemon, `npu`, loopback), as the seed's guide is."""

    name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$")
    # "local": DOCKER_HOST or the local socket; else a docker SDK base URL: unix:///..., ssh://user@host,
    # tcp://host:2376 (with tls).
    docker: str = Field(default="local", pattern=r"^(local|unix://.+|ssh://.+|tcp://.+)$")
    tls: DockerTls | None = None
    address: str  # where the other nodes and this machine reach it: the master's address, its pool segment's
    container_name: str | None = None  # None: container.name, suffixed with -<node name> when there are several
    npu: Npu | None = None  # None: the target's npu
    # mooncake.json fields that differ on this node (local_hostname: each node's own address).
    mooncake_config: dict[str, Any] = {}


class NodeNetwork(_Strict):
    """cpu-local-2node: the docker network the suite creates for the run and removes afterwards; each node's
    container joins it at the node's address. Internal: nothing on it is routed off this machine."""

    name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
    subnet: str = Field(pattern=r"^\d+\.\d+\.\d+\.\d+/\d+$")
    internal: Literal[True] = True


class Instance(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
    node: str | None = None  # the node it runs on (its container); None: the first node
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

    name: str = Field(pattern=r"^[a-zA-Z0-9_.-]+$", description="its name; a threshold's is its field's")
    metric: Literal["mean_ttft", "median_ttft", "p90_ttft", "p99_ttft"] = Field(
        "mean_ttft", description="the TTFT statistic compared")
    baseline: Step = Field("cold", description="the step the target step is compared with")
    target: Step = Field(description="the step judged")
    ratio: float = Field(gt=0, description="the limit of metric(target) / metric(baseline)")
    operator: Literal["<", "<=", ">", ">="] = Field("<", description="how the actual ratio must stand to the limit")


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


class Warmup(_Strict):
    """vllm-ascend's KV pool guide recommends a warm-up before benchmarking: with RoCE device-to-device transfers,
    HCCL makes its connections lazily, on the first transfers (kv_pool.md:413-417). Before step 1 each instance in turn
    serves a set of warm-up prompts cold (puts), then every other instance the same set (gets from the pool across
    instances). The prompts start with a character dataset A never holds, so no block of theirs can be one of dataset
    A's, and step 1 must still find none of dataset A in the pool (tests/acceptance/test_05_kv_pool.py)."""

    num_prompts: int = Field(8, ge=1, description="prompts per instance's set; the guide: 2-3x the devices in all")
    input_len: int | None = Field(None, gt=0, description="tokens per prompt; null: benchmark.input_len (the "
                                                          "guide: 8K)")
    output_len: int = Field(1, ge=1, description="tokens generated per prompt (the guide: 1)")
    seed: int = Field(8, description="of the warm-up prompts; its own, like every other set of prompts")


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
    # Off (null) by default: the seed sends nothing before step 1.
    warmup: Warmup | None = None
    # The load generator of the timed steps (harness/clients.py): our streaming client, aisbench (the seed's), or
    # `vllm bench serve`; each runs on the host. `--client` overrides it for one run.
    client: Literal["ours", "aisbench", "vllm-bench"] = "ours"


class Resilience(_Strict):
    """The opt-in resilience stage (`pytest -m resilience`, tests/resilience/): what a disruption may cost. Its requests
    are fresh prompts of benchmark.input_len tokens sent one at a time, each with its own timeout."""

    prompts: int = Field(default=4, ge=1)  # per disruption
    seed: int = 7  # of those prompts: not the benchmark's, the eviction's nor the probe's
    # A request that has not ended after this long counts as a hang (never waited out longer).
    request_timeout_s: float = Field(default=60, gt=0)
    # After the master restarts (and loses its keys), a cross-instance hit must work again within this.
    recovery_s: float = Field(default=60, gt=0)
    # While instance 1 is down and starting again, the peer's TTFT must stay below this times its own cold TTFT
    # measured before the disruptions (users report spikes for the master's client TTL).
    ttft_spike_ratio: float = Field(default=3.0, gt=0)
    # The pool fill: this many times the prompts the pool holds (master_total_capacity_bytes over one prompt's
    # bytes), but never more than max_fill_prompts (the test says so and skips).
    fill_factor: float = Field(default=2.0, gt=0)
    max_fill_prompts: int = Field(default=400, ge=1)


class Nights(_Strict):
    """Tonight against the last nights (tests/acceptance/test_06_nights.py, run with `--history DIR`;
    harness/nights.py): each step's TTFT statistics and each comparison's ratio against the median of the same
    target's last runs."""

    # The baseline: the median of the last this many comparable runs (same target, versions and config), by start
    # time. A week of nightly builds: one odd night moves a median of 7 little, and a change a week old is the norm.
    runs: int = Field(default=7, ge=1)
    # Fewer comparable runs than this: the test skips and says how many it found. A median of one or two runs is
    # one night's noise (cpu-local's cross-instance ratio ranged 0.164-0.294 over 10 healthy runs, measurements.md).
    min_runs: int = Field(default=3, ge=1)
    # The step statistics compared (TtftStats of results.json). Not p99 and max: with tens of requests a step they
    # are one request's TTFT.
    statistics: list[Literal["mean", "median", "p90"]] = Field(default=["mean", "median", "p90"], min_length=1)
    # A step statistic is a regression when tonight's is more than this fraction above its baseline: 0.25 lets
    # through the spread of healthy nights around their median (cpu-local's cold mean ranged 3.31-3.93 s, +-9%,
    # over 10 runs) and catches a step that got 30% slower.
    ttft_slower_fraction: float = Field(default=0.25, gt=0)
    # A comparison's ratio is a regression when tonight's is worse than its baseline by more than this fraction:
    # above baseline x (1 + fraction) for a `<`/`<=` comparison, below baseline x (1 - fraction) for `>`/`>=`. The
    # ratio divides two steps, so it moves when either does; 0.25 as for the steps. On 2 shared cores it is too tight:
    # cpu-local's worst healthy cross-instance ratio in 10 runs (0.294, one slow batch) was 1.5x their median (0.195,
    # measurements.md), so a cpu-local night like it would be red; no Atlas nights are measured yet.
    ratio_worse_fraction: float = Field(default=0.25, gt=0)

    @field_validator("min_runs")
    @classmethod
    def _at_most_runs(cls, value: int, info: ValidationInfo) -> int:
        runs = info.data.get("runs")
        if runs is not None and value > runs:
            raise ValueError(f"is {value}, more than nights.runs {runs}: the baseline never holds that many runs, so "
                             "the comparison would always skip")
        return value


class EnduranceMix(_Strict):
    """What the endurance traffic sends, as weights of the jobs a worker picks (harness/endurance_traffic.py): a miss
    (a fresh prompt), a local hit (a fresh prompt, then again on the same instance), a cross-instance hit (a fresh
    prompt on one instance, then on the other) and a conversation (turns whose prompt is the last turn's prompt, its
    answer and new text, alternating instances: the shape chat traffic has)."""

    miss: float = Field(0.2, ge=0)
    local_hit: float = Field(0.2, ge=0)
    cross_instance_hit: float = Field(0.3, ge=0)
    conversation: float = Field(0.3, ge=0)


PROVISIONAL = " Provisional: not yet measured on cpu-local or an Atlas (docs/endurance.md)."


class Endurance(_Strict):
    """The opt-in endurance stage (`pytest -m endurance`, tests/endurance/; `tox -e endurance -- --duration 10m`):
    sustained traffic at the target's concurrency against both instances for a duration, its series, and the gates
    it must stay within (harness/endurance.py)."""

    duration_s: float = Field(600, gt=0, description="how long the traffic runs when --duration is not given: 10 min, "
                              "the issue's smallest run that a warm-up and two drift windows fit in")
    interval_s: float = Field(10, gt=0, description="one row of the series (failures, pool, memory) and one progress "
                              "line on the console per this many seconds")
    concurrency: int | None = Field(None, gt=0, description="requests in flight at once, over both instances; unset: "
                                    "benchmark.concurrency (the seed's 25 on the Atlas target)")
    seed: int = Field(11, description="of the endurance prompts: not the benchmark's, the eviction's, the probe's nor "
                      "resilience's, so no prompt is a hit of another stage's")
    max_requests: int = Field(100000, gt=0, description="the traffic also ends after this many requests: a bound by "
                              "count beside the bound by time")
    turns: int = Field(4, ge=2, description="turns of one conversation; each turn's prompt grows by its answer and "
                       "turn_tokens of new text")
    turn_tokens: int = Field(64, gt=0, description="new tokens (approximately: characters at the model's measured "
                             "characters per token) each conversation turn adds")
    mix: EnduranceMix = EnduranceMix()
    request_timeout_s: float = Field(120, gt=0, description="a request that has not ended after this long ends as a "
                                     "timeout; longer than stall_s, so that a stall is seen as one")
    probe_every_s: float = Field(60, gt=0, description="a correctness probe under load this often: a fresh prompt "
                                 "cold and then a local hit on the first instance, then a pool hit on the peer")
    probe_settle_s: float = Field(2, ge=0, description="between a probe's local hit and its pool hit: the "
                                  "connector stores KV in the background; a pool hit before it landed is inconclusive "
                                  "by its hit length, not wrong")
    probe_accept: Literal["equal", "close"] = Field("equal", description="what a probe's pool hit must be against its "
                                                    "local hit: `equal`, token for token, as stage 5's probe; `close` "
                                                    "also takes check_logprobs_close's tolerance (at the first "
                                                    "difference each token is in the other's top logprobs), for a "
                                                    "kernel that is not batch-invariant: under load the two hits run "
                                                    "in different batches." + PROVISIONAL)
    warmup_s: float = Field(120, ge=0, description="the gates on memory and TTFT drift start after this: the "
                            "instances' prefix caches, the pool and the master's maps fill first (the pool's "
                            "segments are touched as keys are put), which is growth by design." + PROVISIONAL)
    drift_window_s: float = Field(120, gt=0, description="the TTFT p99 drift compares the last this many seconds with "
                                  "the first this many after the warm-up; a window holds enough requests for a p99 "
                                  "at the target's concurrency." + PROVISIONAL)
    max_failed_per_1000: float = Field(1.0, ge=0, description="the error budget: failed requests (any HTTP error, "
                                       "timeout or broken stream) per 1000 sent. A healthy deployment fails none; "
                                       "vllm-ascend #15060 reports 432 failed requests in 13 hours from keys not "
                                       "found under load with kv_load_failure_policy=fail." + PROVISIONAL)
    stall_s: float = Field(60, gt=0, description="a stall: requests in flight on an instance and no first token nor "
                           "finished request from it for this long (vllm-ascend: instances that hang after minutes of "
                           "multi-turn traffic). Above the longest healthy TTFT under load." + PROVISIONAL)
    max_memory_slope_mib_per_min: float = Field(10, gt=0, description="RSS growth of each process group (each "
                                                "instance, the master) after the warm-up, least-squares over its "
                                                "samples: a leak (a master's, KV blocks whose free never comes) grows "
                                                "without bound, a warm deployment stays level." + PROVISIONAL)
    max_p99_drift: float = Field(1.5, gt=0, description="TTFT p99 of the last drift window over the first one after "
                                 "the warm-up: a deployment that slows under sustained load (vllm-ascend #14092) "
                                 "drifts up." + PROVISIONAL)

    @model_validator(mode="after")
    def _timeout_outlasts_stall(self) -> Endurance:
        if self.request_timeout_s <= self.stall_s:
            raise ValueError(f"request_timeout_s {self.request_timeout_s:g} s is not more than stall_s "
                             f"{self.stall_s:g} s: a stalled request would end as a timeout before the stall "
                             "could be seen")
        return self

    def concurrency_for(self, benchmark: Benchmark) -> int:
        return self.concurrency or benchmark.concurrency

    def too_short(self, duration_s: float) -> str | None:
        """Why a run of duration_s cannot judge the drift gate (a warm-up and two windows must fit), or None."""
        need = self.warmup_s + 2 * self.drift_window_s
        if duration_s < need:
            return (f"a duration of {duration_s:g} s is shorter than endurance.warmup_s {self.warmup_s:g} s + 2 x "
                    f"endurance.drift_window_s {self.drift_window_s:g} s = {need:g} s: the TTFT drift gate would have "
                    "nothing to compare")
        return None


class PoolCost(_Strict):
    """The opt-in pool-cost stage (`pytest -m pool_cost`, tests/pool_cost/; `tox -e pool-cost`): the pool's own cost.
    The first instance of benchmark.roles serves the same rounds twice, with the pool on (the target as it is) and,
    after a second bring-up of the same instances without kv_transfer_config, off; each round is fresh prompts cold,
    then the same prompts again (a local hit). Gated per step: median TTFT with the pool / without it - 1 <=
    max_slowdown (harness/pool_cost.py)."""

    max_slowdown: float = Field(0.25, gt=-1, description="how much slower the pool may make a miss (the cold step) or "
                                "a local hit, as a fraction of the median TTFT without it (0.25: 25% slower; negative: "
                                "the pool must make it faster, a control's bound). 0.25 is what two healthy runs of "
                                "one step may differ by: the nights' tolerance, set from cpu-local's cold mean over 10 "
                                "runs (+-9% around their median, measurements.md), here between two bring-ups; "
                                "vllm-ascend #14092 reports the pool 'much worse' than without it. Provisional: not "
                                "yet measured on cpu-local or an Atlas (docs/pool-cost.md).")
    num_prompts: int | None = Field(None, gt=0, description="prompts of one round; null: benchmark.concurrency, one "
                                    "wave in flight at once, whose blocks the instance's own KV cache must hold for "
                                    "the repeat to be a local hit (cpu-local's first instance holds 160 blocks, not "
                                    "benchmark.num_prompts' 40 prompts of 9)")
    rounds: int = Field(3, ge=1, description="rounds of fresh prompts, each cold then repeated; the medians are over "
                        "every round's requests")
    seed: int = Field(13, description="of the pool-cost prompts: not another stage's, so no prompt is a hit of theirs")

    def prompts_per_round(self, benchmark: Benchmark) -> int:
        return self.num_prompts or benchmark.concurrency


class Thresholds(_Strict):
    # Upper bounds on mean TTFT as a fraction of the cold mean TTFT (step 1).
    cross_instance_ttft_fraction: float = Field(gt=0, le=1)
    local_hit_ttft_fraction: float = Field(gt=0, le=1)


class Departure(_Strict):
    """Where a target departs from the guide it follows, on purpose: `at` names each difference as
    harness/departures.py keys it (e.g. "master --rpc_port", "instance-1 env VLLM_HOST_IP"), `reason` says why.
    tests/unit/test_departures.py fails on a difference that no departure lists, and on a listed one that is none."""

    at: list[str] = Field(min_length=1)
    reason: str

    @field_validator("at", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("reason")
    @classmethod
    def _said(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty: say why the target departs from its guide here")
        return value


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
    resilience: Resilience = Resilience()
    nights: Nights = Nights()  # tonight against the last nights (--history)
    endurance: Endurance = Endurance()  # the opt-in endurance stage (-m endurance)
    pool_cost: PoolCost = PoolCost()  # the opt-in pool-cost stage (-m pool_cost)
    nodes: list[Node] = []  # empty: one implicit node, this machine's daemon
    network: NodeNetwork | None = None
    departures: list[Departure] = []  # from the guide the target follows, each with its reason

    @property
    def multi_node(self) -> bool:
        return len(self.nodes) > 1

    def node_list(self) -> list[Node]:
        """The nodes, in order; a target without `nodes` has one implicit node on the local daemon."""
        return list(self.nodes) or [Node(name="node1", address=self.mooncake.master.host)]

    def node(self, name: str | None) -> Node:
        """The node of that name; None: the first. A name no node has raises KeyError (traps report it first)."""
        nodes = self.node_list()
        if name is None:
            return nodes[0]
        for n in nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r}")

    def node_of(self, x: Instance) -> Node:
        return self.node(x.node)

    def master_node(self) -> Node:
        return self.node(self.mooncake.master.node)

    def npu_of(self, node: Node) -> Npu:
        return node.npu or self.npu

    def container_name(self, node: Node) -> str:
        if node.container_name:
            return node.container_name
        return f"{self.container.name}-{node.name}" if self.multi_node else self.container.name

    def mooncake_json(self, node: Node) -> MooncakeJson:
        """mooncake.json as written on that node: the target's, with the node's own fields over it."""
        return MooncakeJson.model_validate({**self.mooncake.config.model_dump(), **node.mooncake_config})

    def instances_on(self, node: Node) -> list[Instance]:
        return [x for x in self.instances if self.node_of(x).name == node.name]

    def model_path(self, instance: Instance) -> str:
        return instance.model_path if instance.model_path is not None else self.model.path

    def host_model_path(self, instance: Instance) -> Path | None:
        """Where the instance's model is on the host (through the container's volumes), for a client's tokenizer;
        None when no volume holds it."""
        path = PurePosixPath(self.model_path(instance))
        for v in self.container.volumes:
            if path == PurePosixPath(v.container) or PurePosixPath(v.container) in path.parents:
                return v.host_path() / path.relative_to(v.container)
        return None

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


def resolve_repo_path(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else ROOT / p


def host_memory_bytes(meminfo: str | Path = "/proc/meminfo") -> int | None:
    """MemTotal of this machine in bytes, None when it cannot be read."""
    try:
        text = Path(meminfo).read_text()
    except OSError:
        return None
    m = re.search(r"(?m)^MemTotal:\s+(\d+)\s*kB", text)
    return int(m.group(1)) * 1024 if m else None


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
        return [overlay(b, o) for b, o in zip(base, over)]
    return over


def _with_bases(path: Path, source: str, chain: list[Path]) -> dict:
    """The YAML of `path` laid over the target it `extends` (which may extend another, and so on)."""
    data = _read_yaml(path)
    if "extends" not in data:
        return data
    base = resolve_target_path(str(data.pop("extends")))
    chain = [*chain, path.resolve()]
    if not base.is_file() or base.resolve() in chain:
        raise ConfigError(source, [("extends", f"{base} is no other target file (a target cannot extend itself, "
                                               f"directly or not); name one of {', '.join(available_targets())}")])
    return overlay(_with_bases(base, source, chain), data)


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
    data = _with_bases(path, source, [])
    for node in data.get("nodes") or []:  # a node's npu is laid over the target's: it says only what differs
        if isinstance(node, dict) and isinstance(node.get("npu"), dict) and isinstance(data.get("npu"), dict):
            node["npu"] = overlay(data["npu"], node["npu"])
    try:
        t = Target.model_validate(data)
    except ValidationError as e:
        raise ConfigError(source, [_describe(err) for err in e.errors()]) from None
    if host_memory is None and check_host:
        host_memory = host_memory_bytes()
    problems = traps.check_all(t, host_memory)
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

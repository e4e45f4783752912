"""Prometheus metrics as the suite reads them (vLLM's /metrics, the Mooncake master's): each sample keeps its name,
its labels and its value, and every question asked of them is a method, so nobody splits or searches a flattened
`name{labels}` string.

    m = Metrics.parse(text)                     # prometheus_client's own parser
    m.total("vllm:prefix_cache_hits")           # a counter summed over its label sets, 0 when absent
    m.get("vllm:num_requests_running", engine="0", model_name="qwen")   # one series, None when absent
    m.series("vllm:cache_config_info")[0].labels["block_size"]
    after.minus(before)                         # how each series moved between two readings

A counter is asked for by its family name or its sample name: `total("x")` and `total("x_total")` are the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from pydantic_core import core_schema

COUNTER_SUFFIX = "_total"
CREATED_SUFFIX = "_created"  # a counter's or histogram's creation time: a timestamp, not a count


class NotPrometheus(ValueError):
    """Text that prometheus_client's parser refuses: the message quotes its start."""


@dataclass(frozen=True)
class Sample:
    """One series' value in one reading: `name{labels} value`."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    value: float = 0.0

    def has_labels(self, wanted: Mapping[str, str]) -> bool:
        """True when every wanted label has the wanted value (other labels may be there too)."""
        return all(self.labels.get(k) == v for k, v in wanted.items())


def _key(s: Sample) -> tuple[str, tuple[tuple[str, str], ...], float]:
    return s.name, tuple(sorted(s.labels.items())), s.value


def _counter_names(name: str) -> tuple[str, str]:
    return (name, name + COUNTER_SUFFIX) if not name.endswith(COUNTER_SUFFIX) else (name[:-len(COUNTER_SUFFIX)], name)


class Metrics:
    """The samples of one /metrics reading (or a difference of two readings), in the order they were read."""

    def __init__(self, samples: Iterable[Sample] = ()) -> None:
        self.samples: tuple[Sample, ...] = tuple(samples)

    @classmethod
    def parse(cls, text: str) -> Metrics:
        """Prometheus text -> its samples, by prometheus_client's own parser: a label value may hold `}` or `,`.
        Where a counter's samples lack the `_total` suffix (some of Mooncake 0.3.13's), the parser adds it, as the
        exposition format says they should be named. Text the parser refuses raises NotPrometheus."""
        try:
            return cls(Sample(s.name, dict(s.labels), s.value)
                       for family in text_string_to_metric_families(text) for s in family.samples)
        except ValueError as e:
            raise NotPrometheus(f"metrics are not Prometheus text ({e}): {text[:300]!r}") from None

    @classmethod
    def of_totals(cls, totals: Mapping[str, float]) -> Metrics:
        """One unlabelled sample per name: how results.json keeps a step's evidence (`summed()` written out)."""
        return cls(Sample(name, {}, float(value)) for name, value in totals.items())

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __eq__(self, other: object) -> bool:
        """The same samples, in any order."""
        return isinstance(other, Metrics) and sorted(map(_key, self.samples)) == sorted(map(_key, other.samples))

    def __repr__(self) -> str:
        return f"Metrics({list(self.samples)!r})"

    def names(self) -> list[str]:
        """Each sample name once, in the order first read."""
        return list(dict.fromkeys(s.name for s in self.samples))

    def series(self, name: str, /, **labels: str) -> list[Sample]:
        """The samples of exactly this name whose labels include the given ones."""
        return [s for s in self.samples if s.name == name and s.has_labels(labels)]

    def get(self, name: str, /, **labels: str) -> float | None:
        """The value of the series of this name with exactly these labels, None when there is none."""
        return next((s.value for s in reversed(self.samples) if s.name == name and s.labels == labels), None)

    def has(self, name: str, /) -> bool:
        """True when a sample has this name (a counter: with or without `_total`)."""
        names = _counter_names(name)
        return any(s.name in names for s in self.samples)

    def total(self, name: str, /, **labels: str) -> float:
        """The sum of the samples of this name (a counter: with or without `_total`) whose labels include the given
        ones; 0 when there are none (Mooncake 0.3.7.post2 lists a counter only once it moved)."""
        names = _counter_names(name)
        return sum(s.value for s in self.samples if s.name in names and s.has_labels(labels))

    def minus(self, before: Metrics) -> Metrics:
        """How each series of this reading moved since `before` (a series absent then counts from 0); `_created`
        series are timestamps and are left out."""
        old = {_key(s)[:2]: s.value for s in before.samples}
        return Metrics(Sample(s.name, s.labels, s.value - old.get(_key(s)[:2], 0.0))
                       for s in self.samples if not s.name.endswith(CREATED_SUFFIX))

    def starting(self, prefixes: tuple[str, ...]) -> Metrics:
        """The samples whose name starts with one of the prefixes (a family and its `_total`, `_sum`, ...)."""
        return Metrics(s for s in self.samples if s.name.startswith(prefixes))

    def changed(self) -> Metrics:
        """The samples whose value is not 0: of a difference, the series that moved."""
        return Metrics(s for s in self.samples if s.value != 0)

    def summed(self) -> Metrics:
        """One unlabelled sample per name, the sum of that name's series, in the order first read."""
        return Metrics.of_totals(self.by_name())

    def by_name(self) -> dict[str, float]:
        """{name: the sum of its series}: the form results.json keeps."""
        out: dict[str, float] = {}
        for s in self.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
        return out

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        """In a pydantic model (results.json's evidence) Metrics is written as {name: total} and read back from it."""
        from_totals = core_schema.no_info_after_validator_function(
            cls.of_totals, core_schema.dict_schema(core_schema.str_schema(), core_schema.float_schema()))
        return core_schema.json_or_python_schema(
            json_schema=from_totals,
            python_schema=core_schema.union_schema([core_schema.is_instance_schema(cls), from_totals]),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda m: m.by_name()))

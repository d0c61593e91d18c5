"""devstack's CloudWatch read path: ``GetMetricData`` and ``GetMetricStatistics`` answered as
CloudWatch answers them, from the datums moto stored.

moto computes no percentiles (``GetMetricStatistics`` ignores ``ExtendedStatistics``,
``GetMetricData`` with ``Stat: p99`` crashes) and its ``GetMetricData`` drops the namespace
filter when a query has dimensions, so ``ChatBot/Flask`` and ``ChatBot/FastAPI`` merge. The fault
injector (:mod:`devstack.moto_faults`, which runs moto in the same process) hands these two
operations to :class:`CloudWatchFront`, which reads moto's backend
(``moto.cloudwatch.models.cloudwatch_backends[account][region].metric_data``; ``Values``/``Counts``
are stored there expanded, one datum per count, ``StatisticValues`` as aggregates) and answers in
the wire format botocore parses: the query protocol (XML, botocore < 1.42.7) or the JSON protocol
(``X-Amz-Target: GraniteServiceVersion20100801.<Operation>``, botocore >= 1.42.7). Everything
else (PutMetricData, ListMetrics, alarms, ...) still goes to moto.

What it does, and the choices where CloudWatch documents nothing:

- **matching**: the namespace and metric name exactly; the dimensions as an exact set (the
  datum's dimensions must be the query's, no more and no fewer: "you must specify the same
  dimensions that were used when the metrics were created"); ``Unit``, when given, only data
  published with that unit.
- **statistics**: ``SampleCount``, ``Sum``, ``Average``, ``Minimum``, ``Maximum`` and percentiles
  ``pNN``/``pNN.N``/``pNN.NN`` (p0 to p100), as GMD's ``Stat`` or GMS's ``ExtendedStatistics``.
  The percentile is the **nearest rank**: the smallest published value with at least p% of the
  period's samples at or below it (rank ``ceil(p/100 * n)``, at least 1), each value weighted by
  its count. Data published as ``StatisticValues`` takes part only when its SampleCount is 1 or
  its Minimum equals its Maximum; otherwise, or when any value is negative, the period has no
  percentile (GMD leaves that timestamp out, GMS leaves the key out of ``ExtendedStatistics``).
  Other extended statistics (``tm99``, ``IQM``, ...) and metric-math or Metrics Insights
  ``Expression`` queries are refused with a ``ValidationError`` naming what is supported.
- **periods**: 1, 5, 10, 20, 30, 60 or any multiple of 60. ``StartTime`` is inclusive and rounded
  down as CloudWatch documents: for a period under 60 to a multiple of the period within the
  minute (1: the whole second); otherwise to the minute (start less than 15 days ago), to 5
  minutes (15 to 63 days) or to the hour (older). ``EndTime`` is exclusive and not rounded: the
  periods are ``[start + k * period, start + (k + 1) * period)`` while they begin before
  ``EndTime``, and the last one holds data up to ``EndTime`` only. A period with no data gives no
  datapoint. Periods under 60 s reach back 3 hours, under 300 s 15 days, under 3600 s 63 days
  (older periods of that length are empty, as CloudWatch's retention makes them). moto keeps no
  ``StorageResolution``, so a period under 60 s over standard-resolution data is answered from
  the datums' own timestamps (our apps stamp those at the minute).
- **answers**: GMD: one result per query with ``ReturnData`` (default true), ``Id``, ``Label``
  (default: the metric name), ``Timestamps``/``Values`` newest first unless
  ``ScanBy=TimestampAscending``, ``StatusCode: Complete``; no paging (``MaxDatapoints`` and
  ``NextToken`` are ignored: everything comes in one answer). GMS: ``Label`` (the metric name) and
  the ``Datapoints`` oldest first, each with the requested statistics, ``Unit`` (the data's, or
  ``None``) and ``ExtendedStatistics``; more than 1,440 periods in the range is an
  ``InvalidParameterCombination`` error, as is giving both or neither of ``Statistics`` and
  ``ExtendedStatistics``.
- **reading moto**: :class:`SeriesIndex` groups the stored datums per series and reads only
  what moto appended since the last request (60 queries over 195,000 stored values: about
  0.1 s, the first read of them 1.3 s). The metrics moto makes up for its other services
  (its ``CloudWatchMetricProvider`` s) are not served: only what was put.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from botocore.utils import parse_timestamp

ACTIONS = ("GetMetricData", "GetMetricStatistics")
XMLNS = "http://monitoring.amazonaws.com/doc/2010-08-01/"
BASIC_STATS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
SHORT_PERIODS = (1, 5, 10, 20, 30)
MAX_GMS_DATAPOINTS = 1440
MAX_QUERIES = 500
MAX_EXTENDED_STATISTICS = 10
PERCENTILE = re.compile(r"^p(?P<p>\d{1,3}(?:\.\d{1,2})?)$")
QUERY_ID = re.compile(r"^[a-z][a-zA-Z0-9_]*$")
_SCOPE = re.compile(r"Credential=(?P<key>[^/,]+)/[^/,]+/(?P<region>[^/,]+)/[^/,]+/")
_DAY = 86_400
# (age of the start, what its period must be a multiple of, what it is rounded down to)
_RETENTION = ((63 * _DAY, 3600, 3600), (15 * _DAY, 300, 300), (3 * 3600, 60, 60))

Answer = tuple[str, list[tuple[str, str]], bytes]


class CloudWatchError(Exception):
    """A 400 answered as CloudWatch answers it (``code`` is the query protocol's error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> CloudWatchError:
    return CloudWatchError("InvalidParameterValue", message)


# --- statistics ---------------------------------------------------------------------------------

@dataclass
class Cell:
    """The samples of one metric in one period: raw values (``Values``/``Counts``/``Value``,
    one per count) and statistic sets (``StatisticValues``: count, sum, min, max)."""

    values: list[float] = field(default_factory=list)
    sets: list[tuple[float, float, float, float]] = field(default_factory=list)
    unit: str | None = None

    def __bool__(self) -> bool:
        return bool(self.values or self.sets)

    def sample_count(self) -> float:
        return len(self.values) + sum(s[0] for s in self.sets)

    def sum(self) -> float:
        return math.fsum(self.values) + math.fsum(s[1] for s in self.sets)

    def minimum(self) -> float:
        return min([*self.values, *(s[2] for s in self.sets)])

    def maximum(self) -> float:
        return max([*self.values, *(s[3] for s in self.sets)])

    def average(self) -> float:
        count = self.sample_count()
        return self.sum() / count if count else 0.0

    def percentile(self, p: Fraction) -> float | None:
        """Nearest rank, weighted by counts; None when CloudWatch would have none."""
        flat: list[tuple[float, Fraction]] = []
        for count, total, low, high in self.sets:
            if count == 1:
                flat.append((total, Fraction(1)))
            elif low == high:
                flat.append((low, Fraction(count)))
            else:
                return None  # a summary of distinct values: no percentile on CloudWatch
        flat = [(v, w) for v, w in flat if w > 0]
        if not (self.values or flat) or any(v < 0 for v in self.values) or any(
                v < 0 for v, _ in flat):
            return None
        if not flat:  # raw values only (one per count): the rank is exact in integers
            ordered = sorted(self.values)
            rank = max(1, math.ceil(p * len(ordered) / 100))
            return ordered[min(rank, len(ordered)) - 1]
        weighted = sorted([*((v, Fraction(1)) for v in self.values), *flat],
                          key=lambda vw: vw[0])
        target = p / 100 * sum(w for _, w in weighted)
        seen = Fraction(0)
        for value, weight in weighted:
            seen += weight
            if seen >= target:
                return value
        return weighted[-1][0]

    def statistic(self, stat: str) -> float | None:
        if stat == "SampleCount":
            return self.sample_count()
        if stat == "Sum":
            return self.sum()
        if stat == "Average":
            return self.average()
        if stat == "Minimum":
            return self.minimum()
        if stat == "Maximum":
            return self.maximum()
        return self.percentile(percentile_of(stat))


def percentile_of(stat: str) -> Fraction:
    """``p99.9`` -> 99.9 (exactly); ValueError for what is not a percentile from p0 to p100."""
    match = PERCENTILE.match(stat)
    if match is None:
        raise ValueError(stat)
    p = Fraction(match.group("p"))
    if p > 100:
        raise ValueError(stat)
    return p


def is_statistic(stat: str) -> bool:
    if stat in BASIC_STATS:
        return True
    try:
        percentile_of(stat)
    except ValueError:
        return False
    return True


def valid_period(period: int) -> bool:
    return period in SHORT_PERIODS or (period > 0 and period % 60 == 0)


def aligned_start(start: float, period: int, now: float) -> int:
    """StartTime rounded down as CloudWatch documents (epoch seconds)."""
    if period in SHORT_PERIODS:
        return math.floor(start) // period * period
    step = 60
    for age, _, rounding in _RETENTION[:2]:
        if now - start > age:
            step = rounding
            break
    return math.floor(start) // step * step


def retained(bucket_start: float, period: int, now: float) -> bool:
    """Whether CloudWatch still holds periods of this length that old."""
    for age, multiple, _ in _RETENTION:
        if now - bucket_start > age:
            return period % multiple == 0
    return True


@dataclass(frozen=True)
class MetricKey:
    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]  # sorted
    unit: str | None = None  # None: any unit

    @property
    def series(self) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        return self.namespace, self.name, self.dimensions


@dataclass(frozen=True)
class Entry:
    """One stored datum, as read once from moto: a raw value or a statistic set."""

    ts: float
    unit: str | None
    value: float | None = None
    stats: tuple[float, float, float, float] | None = None  # count, sum, min, max


Series = tuple[str, str, tuple[tuple[str, str], ...]]  # namespace, name, sorted dimensions


def _epoch(value: datetime) -> float:
    if value.tzinfo is None:  # moto stamps a datum without a Timestamp in naive UTC
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _dimensions(raw: Iterable[Any]) -> tuple[tuple[str, str], ...]:
    out = []
    for d in raw:
        if isinstance(d, dict):
            out.append((str(d.get("Name")), str(d.get("Value"))))
        else:  # moto's Dimension
            out.append((str(d.name), str(d.value)))
    return tuple(sorted(out))


class SeriesIndex:
    """moto's stored datums grouped by series, read incrementally: moto only appends to a
    backend's ``metric_data`` (a reset makes a new backend, and a new list), so each request
    reads only what arrived since the last one. Without it, a 60-query GetMetricData over
    200,000 stored values took 12 s."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._source: list[Any] | None = None
        self._seen = 0
        self._series: dict[Series, list[Entry]] = {}

    def update(self, stored: list[Any]) -> None:
        with self._lock:
            if stored is not self._source or len(stored) < self._seen:
                self._source, self._seen, self._series = stored, 0, {}
            end = len(stored)
            for datum in stored[self._seen:end]:
                key = (str(datum.namespace), str(datum.name), _dimensions(datum.dimensions))
                ts = _epoch(datum.timestamp)
                unit = datum.unit
                if hasattr(datum, "value"):
                    entry = Entry(ts, unit, value=float(datum.value))
                else:
                    entry = Entry(ts, unit, stats=(float(datum.sample_count), float(datum.sum),
                                                   float(datum.min), float(datum.max)))
                self._series.setdefault(key, []).append(entry)
            self._seen = end

    def entries(self, series: Series) -> list[Entry]:
        with self._lock:
            return list(self._series.get(series, ()))


Lookup = Callable[[Series], list[Entry]]


def cells(entries: Iterable[Entry], key: MetricKey, start: int, end: float, period: int,
          now: float) -> list[tuple[int, Cell]]:
    """The non-empty periods of one series, oldest first."""
    by_bucket: dict[int, Cell] = {}
    for entry in entries:
        if key.unit is not None and entry.unit != key.unit:
            continue
        if not start <= entry.ts < end:
            continue
        bucket = start + int((entry.ts - start) // period) * period
        if not retained(bucket, period, now):
            continue
        cell = by_bucket.setdefault(bucket, Cell(unit=entry.unit))
        if entry.stats is None:
            assert entry.value is not None
            cell.values.append(entry.value)
        else:
            cell.sets.append(entry.stats)
    return sorted((b, c) for b, c in by_bucket.items() if c)


# --- the operations -----------------------------------------------------------------------------

def _time(params: dict[str, Any], name: str) -> float:
    if params.get(name) in (None, ""):
        raise CloudWatchError("MissingParameter",
                              f"The parameter {name} is required.")
    try:
        return _epoch(parse_timestamp(params[name]))
    except (ValueError, TypeError):
        raise _invalid(f"The parameter {name} must be an ISO 8601 UTC timestamp.") from None


def _int(value: Any, name: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _invalid(f"The parameter {name} must be an integer.") from None
    if not number.is_integer():
        raise _invalid(f"The parameter {name} must be an integer.")
    return int(number)


def _bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).lower() == "true"


def get_metric_statistics(lookup: Lookup, params: dict[str, Any], now: float
                          ) -> dict[str, Any]:
    for name in ("Namespace", "MetricName", "Period"):
        if params.get(name) in (None, ""):
            raise CloudWatchError("MissingParameter", f"The parameter {name} is required.")
    start, end = _time(params, "StartTime"), _time(params, "EndTime")
    period = _int(params["Period"], "Period")
    if not valid_period(period):
        raise _invalid(f"The parameter Period must be 1, 5, 10, 20, 30, 60 or a multiple of 60, "
                       f"not {period}.")
    if start >= end:
        raise _invalid("The parameter StartTime must be less than the parameter EndTime.")
    statistics = [str(s) for s in params.get("Statistics") or []]
    extended = [str(s) for s in params.get("ExtendedStatistics") or []]
    if bool(statistics) == bool(extended):
        raise CloudWatchError("InvalidParameterCombination",
                              "Must specify either Statistics or ExtendedStatistics, not both.")
    for stat in statistics:
        if stat not in BASIC_STATS:
            raise _invalid(f"The value {stat} for parameter Statistics is not one of "
                           f"{', '.join(BASIC_STATS)}.")
    if len(extended) > MAX_EXTENDED_STATISTICS:
        raise _invalid("The collection ExtendedStatistics must not have a size greater than "
                       f"{MAX_EXTENDED_STATISTICS}.")
    for stat in extended:
        try:
            percentile_of(stat)
        except ValueError:
            raise _invalid(f"The value {stat} for parameter ExtendedStatistics is not a "
                           "percentile from p0.0 to p100.") from None
    first = aligned_start(start, period, now)
    requested = math.ceil((end - first) / period)
    if requested > MAX_GMS_DATAPOINTS:
        raise CloudWatchError(
            "InvalidParameterCombination",
            f"You have requested up to {requested} datapoints, which exceeds the limit of "
            f"{MAX_GMS_DATAPOINTS}. You may reduce the datapoints requested by increasing "
            "Period, or decreasing the time range.")
    unit = params.get("Unit") or None
    key = MetricKey(str(params["Namespace"]), str(params["MetricName"]),
                    _dimensions(params.get("Dimensions") or []), unit)
    datapoints = []
    for bucket, cell in cells(lookup(key.series), key, first, end, period, now):
        point: dict[str, Any] = {"Timestamp": bucket}
        for stat in statistics:
            point[stat] = cell.statistic(stat)
        values = {stat: cell.percentile(percentile_of(stat)) for stat in extended}
        if extended:
            point["ExtendedStatistics"] = {k: v for k, v in values.items() if v is not None}
        point["Unit"] = unit or cell.unit or "None"
        datapoints.append(point)
    return {"Label": key.name, "Datapoints": datapoints}


def get_metric_data(lookup: Lookup, params: dict[str, Any], now: float) -> dict[str, Any]:
    start, end = _time(params, "StartTime"), _time(params, "EndTime")
    if start >= end:
        raise CloudWatchError("ValidationError",
                              "The parameter StartTime must be less than the parameter EndTime.")
    scan_by = params.get("ScanBy") or "TimestampDescending"
    if scan_by not in ("TimestampDescending", "TimestampAscending"):
        raise CloudWatchError("ValidationError", f"The value {scan_by} for parameter ScanBy is "
                              "not TimestampDescending or TimestampAscending.")
    queries = params.get("MetricDataQueries") or []
    if not queries:
        raise CloudWatchError("MissingParameter",
                              "The parameter MetricDataQueries is required.")
    if len(queries) > MAX_QUERIES:
        raise CloudWatchError("ValidationError", f"The collection MetricDataQueries must not "
                              f"have a size greater than {MAX_QUERIES}.")
    seen: set[str] = set()
    results = []
    memo: dict[tuple[MetricKey, int, int], list[tuple[int, Cell]]] = {}
    for i, query in enumerate(queries, 1):
        where = f"MetricDataQueries.member.{i}"
        qid = str(query.get("Id") or "")
        if not QUERY_ID.match(qid):
            raise CloudWatchError("ValidationError", f"Invalid metric_id: {qid!r} ({where}.Id): "
                                  "letters, digits and _, starting with a lowercase letter.")
        if qid in seen:
            raise CloudWatchError("ValidationError", f"The value {qid} for {where}.Id is not "
                                  "unique.")
        seen.add(qid)
        stat_spec = query.get("MetricStat")
        if query.get("Expression") is not None:
            if stat_spec is not None:
                raise CloudWatchError("ValidationError", f"{where}: specify either Expression "
                                      "or MetricStat, not both.")
            raise CloudWatchError("ValidationError", f"{where}.Expression: devstack answers "
                                  "MetricStat queries only (no metric math, no Metrics "
                                  "Insights); compute the expression from MetricStat results.")
        if not isinstance(stat_spec, dict):
            raise CloudWatchError("ValidationError",
                                  f"The parameter {where}.MetricStat is required.")
        metric = stat_spec.get("Metric") or {}
        for name in ("Namespace", "MetricName"):
            if not metric.get(name):
                raise CloudWatchError("MissingParameter", f"The parameter "
                                      f"{where}.MetricStat.Metric.{name} is required.")
        stat = str(stat_spec.get("Stat") or "")
        if not is_statistic(stat):
            raise CloudWatchError("ValidationError", f"The value {stat!r} for {where}.MetricStat"
                                  ".Stat is not supported by devstack: SampleCount, Sum, Average,"
                                  " Minimum, Maximum or a percentile pNN.NN (p0 to p100).")
        period = _int(stat_spec.get("Period"), f"{where}.MetricStat.Period")
        if not valid_period(period):
            raise CloudWatchError("ValidationError", f"The parameter {where}.MetricStat.Period "
                                  "must be 1, 5, 10, 20, 30, 60 or a multiple of 60.")
        key = MetricKey(str(metric["Namespace"]), str(metric["MetricName"]),
                        _dimensions(metric.get("Dimensions") or []),
                        stat_spec.get("Unit") or None)
        first = aligned_start(start, period, now)
        memo_key = (key, first, period)
        if memo_key not in memo:  # several statistics of one series: its periods once
            memo[memo_key] = cells(lookup(key.series), key, first, end, period, now)
        points = []
        for bucket, cell in memo[memo_key]:
            value = cell.statistic(stat)
            if value is not None:
                points.append((bucket, value))
        if scan_by == "TimestampDescending":
            points.reverse()
        if _bool(query.get("ReturnData"), True):
            results.append({"Id": qid, "Label": query.get("Label") or key.name,
                            "Timestamps": [t for t, _ in points],
                            "Values": [v for _, v in points], "StatusCode": "Complete",
                            "Messages": []})
    return {"MetricDataResults": results, "Messages": []}


OPERATIONS: dict[str, Callable[[Lookup, dict[str, Any], float], dict[str, Any]]] = {
    "GetMetricData": get_metric_data,
    "GetMetricStatistics": get_metric_statistics,
}


# --- the wire -----------------------------------------------------------------------------------

class _Index(int):
    """A list position in a query-protocol key (``member.N``)."""


def unflatten(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Query-protocol parameters (``A.member.1.B=x``) as nested dicts and lists."""
    root: dict[Any, Any] = {}
    for key, value in pairs:
        tokens = key.split(".")
        path: list[Any] = []
        i = 0
        while i < len(tokens):
            if tokens[i] == "member" and i + 1 < len(tokens) and tokens[i + 1].isdigit():
                path.append(_Index(int(tokens[i + 1])))
                i += 2
            else:
                path.append(tokens[i])
                i += 1
        node = root
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break  # "A=x" and "A.B=y" both given: the first one stays
            node = child
        else:
            node[path[-1]] = value
    out = _lists(root)
    assert isinstance(out, dict)
    return out


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(isinstance(k, _Index) for k in node):
        return [_lists(node[k]) for k in sorted(node)]
    return {k: _lists(v) for k, v in node.items()}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _num(value: float) -> str:
    return repr(float(value))


def _xml_value(tag: str, value: Any) -> str:
    if tag in ("Timestamp",):
        return f"<{tag}>{_iso(value)}</{tag}>"
    if isinstance(value, float | int) and not isinstance(value, bool):
        return f"<{tag}>{_num(value)}</{tag}>"
    return f"<{tag}>{escape(str(value))}</{tag}>"


def _xml_result(action: str, result: dict[str, Any]) -> str:
    parts: list[str] = []
    if action == "GetMetricData":
        parts.append("<MetricDataResults>")
        for r in result["MetricDataResults"]:
            parts.append(f"<member><Id>{escape(r['Id'])}</Id><Label>{escape(r['Label'])}</Label>")
            parts.append("<Timestamps>" + "".join(f"<member>{_iso(t)}</member>"
                                                  for t in r["Timestamps"]) + "</Timestamps>")
            parts.append("<Values>" + "".join(f"<member>{_num(v)}</member>"
                                              for v in r["Values"]) + "</Values>")
            parts.append(f"<StatusCode>{r['StatusCode']}</StatusCode><Messages/></member>")
        parts.append("</MetricDataResults><Messages/>")
    else:
        parts.append(f"<Label>{escape(result['Label'])}</Label><Datapoints>")
        for point in result["Datapoints"]:
            parts.append("<member>")
            for tag, value in point.items():
                if tag == "ExtendedStatistics":
                    parts.append("<ExtendedStatistics>" + "".join(
                        f"<entry><key>{escape(k)}</key><value>{_num(v)}</value></entry>"
                        for k, v in value.items()) + "</ExtendedStatistics>")
                else:
                    parts.append(_xml_value(tag, value))
            parts.append("</member>")
        parts.append("</Datapoints>")
    return "".join(parts)


def query_answer(action: str, result: dict[str, Any], request_id: str) -> bytes:
    return (f'<{action}Response xmlns="{XMLNS}"><{action}Result>{_xml_result(action, result)}'
            f"</{action}Result><ResponseMetadata><RequestId>{request_id}</RequestId>"
            f"</ResponseMetadata></{action}Response>").encode()


def query_error(error: CloudWatchError, request_id: str) -> bytes:
    return (f'<ErrorResponse xmlns="{XMLNS}"><Error><Type>Sender</Type>'
            f"<Code>{escape(error.code)}</Code><Message>{escape(error.message)}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>").encode()


@dataclass(frozen=True)
class Request:
    action: str
    params: dict[str, Any]
    json: bool
    account: str
    region: str


def _account(environ: dict[str, Any], access_key: str) -> str:
    """The account moto files the request under (as moto's ``get_current_account`` does)."""
    if "MOTO_ACCOUNT_ID" in os.environ:
        return os.environ["MOTO_ACCOUNT_ID"]
    if environ.get("HTTP_X_MOTO_ACCOUNT_ID"):
        return str(environ["HTTP_X_MOTO_ACCOUNT_ID"])
    from moto.iam.models import get_account_id_from

    return str(get_account_id_from(access_key))


def parse_request(environ: dict[str, Any], body: str) -> Request | None:
    """The operation and its parameters when it is one this front answers, else None."""
    content_type = environ.get("CONTENT_TYPE", "")
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    params: dict[str, Any]
    if "json" in content_type:
        action = target.rsplit(".", 1)[-1]  # GraniteServiceVersion20100801.GetMetricData
        if action not in ACTIONS:
            return None
        try:
            loaded = json.loads(body or "{}")
        except ValueError:
            return None  # moto answers what it makes of it
        params = loaded if isinstance(loaded, dict) else {}
        is_json = True
    else:
        pairs = [(k, v) for k, vs in parse_qs(environ.get("QUERY_STRING", "")).items()
                 for v in vs]
        pairs += [(k, v) for k, vs in parse_qs(body).items() for v in vs]
        actions = [v for k, v in pairs if k == "Action"]
        if not actions or actions[-1] not in ACTIONS:
            return None
        action = actions[-1]
        params = unflatten((k, v) for k, v in pairs if k not in ("Action", "Version"))
        is_json = False
    scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    access_key = scope.group("key") if scope else ""
    region = scope.group("region") if scope else "us-east-1"
    return Request(action, params, is_json, _account(environ, access_key), region)


def _stored(account: str, region: str) -> list[Any]:
    from moto.cloudwatch.models import cloudwatch_backends

    stored: list[Any] = cloudwatch_backends[account][region].metric_data
    return stored  # moto's own list, not a copy: the index reads what was appended since


class CloudWatchFront:
    """Answers GetMetricData and GetMetricStatistics; ``None`` for anything else."""

    def __init__(self, clock: Callable[[], float] = time.time,
                 datums: Callable[[str, str], list[Any]] = _stored) -> None:
        self.clock = clock
        self.datums = datums
        self._indexes: dict[tuple[str, str], SeriesIndex] = {}
        self._lock = threading.Lock()

    def _lookup(self, account: str, region: str) -> Lookup:
        with self._lock:
            index = self._indexes.setdefault((account, region), SeriesIndex())
        index.update(self.datums(account, region))
        return index.entries

    def __call__(self, environ: dict[str, Any], body: str) -> Answer | None:
        request = parse_request(environ, body)
        if request is None:
            return None
        request_id = str(uuid.uuid4())
        try:
            result = OPERATIONS[request.action](
                self._lookup(request.account, request.region), request.params, self.clock())
        except CloudWatchError as exc:
            return self._error(request, exc, request_id)
        if request.json:
            payload = json.dumps(result).encode()
            content_type = "application/x-amz-json-1.0"
        else:
            payload = query_answer(request.action, result, request_id)
            content_type = "text/xml"
        return "200 OK", [("Content-Type", content_type), ("Content-Length", str(len(payload))),
                          ("x-amzn-RequestId", request_id)], payload

    @staticmethod
    def _error(request: Request, exc: CloudWatchError, request_id: str) -> Answer:
        headers = [("x-amzn-RequestId", request_id)]
        if request.json:
            payload = json.dumps({"__type": exc.code, "message": exc.message}).encode()
            headers += [("Content-Type", "application/x-amz-json-1.0"),
                        ("x-amzn-query-error", f"{exc.code};Sender")]
        else:
            payload = query_error(exc, request_id)
            headers.append(("Content-Type", "text/xml"))
        headers.append(("Content-Length", str(len(payload))))
        return "400 Bad Request", headers, payload

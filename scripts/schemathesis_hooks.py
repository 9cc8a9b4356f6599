"""schemathesis hooks for holdfast: the rules of the contract that JSON Schema cannot state.

Every limit on a single value is in the OpenAPI document itself. What is left are rules
between values and across requests, stated in the operations' descriptions and the README:

- An Idempotency-Key is unique per intended operation; reusing one for a different request is
  refused (422 IDEMPOTENCY_KEY_REUSED, as the IETF Idempotency-Key draft says). A fuzzer that
  draws keys from a small alphabet reuses them all the time, so each valid key it generates is
  made unique here (invalid ones are left as drawn, and must still be refused).
- Ranges go forwards (`to` after `from`, `check_out` after `check_in`, `end` after `start`)
  and are bounded (366 nights, 31 days of slots, a slot of at most a day); a layout has at
  most EVENT_MAX_SEATS seats; a night patch changes something. Positive test cases that break
  these are dropped: they are not valid requests.
"""

import re
import uuid
from datetime import date, datetime, timezone

import schemathesis

VALID_KEY = re.compile(r"^[!-~]{1,255}$")


@schemathesis.hook
def map_case(ctx, case):
    headers = case.headers
    if headers:
        for name in list(headers):
            if name.lower() == "idempotency-key" and isinstance(headers[name], str) and VALID_KEY.match(headers[name]):
                headers[name] = str(uuid.uuid4())
    return case


def _day(value):
    try:
        return date.fromisoformat(value[:10]) if isinstance(value, str) else None
    except ValueError:
        return None


def _instant(value):
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else None
    except ValueError:
        return None
    if t is not None and t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t


def _forwards(first, last, max_days):
    if first is None or last is None:
        return True  # not this hook's business: the schema decides
    return first < last and (last - first).days <= max_days


def _valid_body(path, body):
    if not isinstance(body, dict):
        return True
    if path == "/v1/events":
        layout = body.get("layout")
        seats = body.get("seats")
        if (layout is None) == (seats is None):
            return False  # exactly one of them
        if isinstance(layout, dict):
            dims = [layout.get(k) for k in ("sections", "rows", "seats_per_row")]
            if all(isinstance(d, (int, float)) for d in dims) and dims[0] * dims[1] * dims[2] > 100_000:
                return False
        if isinstance(seats, list):
            spots = [(s.get("section", "").strip(), s.get("row", "").strip(), s.get("number")) for s in seats if isinstance(s, dict)]
            if len(set(spots)) != len(spots):
                return False  # a seat listed twice
    if path.endswith("/nights"):
        if all(body.get(k) is None for k in ("capacity", "closed", "overbooking_allowance")):
            return False
        return _forwards(_day(body.get("from")), _day(body.get("to")), 366)
    if path == "/v1/inventories":
        return _forwards(_day(body.get("from")), _day(body.get("to")), 366)
    if path.startswith("/v1/inventories/") and path.endswith("/holds"):
        return _forwards(_day(body.get("check_in")), _day(body.get("check_out")), 366)
    if path.startswith("/v1/resources/") and path.endswith("/holds") or path.endswith("/reschedule"):
        start, end = _instant(body.get("start")), _instant(body.get("end"))
        return start is None or end is None or (start < end and (end - start).total_seconds() <= 86400)
    if path == "/v1/resources":
        hours = body.get("opening_hours")
        if isinstance(hours, dict):
            for intervals in hours.values():
                spans = []
                for i in intervals if isinstance(intervals, list) else []:
                    if isinstance(i, dict) and isinstance(i.get("open"), str) and isinstance(i.get("close"), str):
                        spans.append((i["open"], i["close"]))
                if any(o >= c for o, c in spans):
                    return False
                spans.sort()
                if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
                    return False
                g = body.get("slot_granularity_minutes")
                if isinstance(g, (int, float)) and g > 0 and float(g).is_integer():
                    g = int(g)
                    for o, c in spans:
                        for t in (o, c):
                            h, m = t.split(":")
                            if (int(h) * 60 + int(m)) % g:
                                return False
    return True


def _valid_query(path, query):
    if not isinstance(query, dict):
        return True
    if path.endswith("/availability") and path.startswith("/v1/inventories/"):
        return _forwards(_day(query.get("from")), _day(query.get("to")), 366)
    if path.endswith("/availability") and path.startswith("/v1/resources/"):
        first, last = _instant(query.get("from")) or _day(query.get("from")), _instant(query.get("to")) or _day(query.get("to"))
        if isinstance(first, datetime) != isinstance(last, datetime):
            return True
        if not _forwards(first, last, 31):
            return False
    return True


@schemathesis.hook
def filter_case(ctx, case):
    # Only drop cases that are meant to be valid: negative cases must still be refused.
    generation = getattr(getattr(case, "meta", None), "generation", None)
    if generation is not None and "negative" in str(getattr(generation, "mode", "")).lower():
        return True
    path = case.operation.path
    return _valid_body(path, case.body) and _valid_query(path, case.query)

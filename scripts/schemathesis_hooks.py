"""schemathesis hooks for holdfast: the rules of the contract that JSON Schema cannot state.

Every limit on a single value is in the OpenAPI document itself. What is left are rules
between values and across requests, stated in the operations' descriptions and the README:

- An Idempotency-Key is unique per intended operation; reusing one for a different request is
  refused (422 IDEMPOTENCY_KEY_REUSED, as the IETF Idempotency-Key draft says). A fuzzer that
  draws keys from a small alphabet reuses them all the time, so each valid key it generates is
  made unique here (invalid ones are left as drawn, and must still be refused).
- Ranges go forwards (`to` after `from`, `check_out` after `check_in`, `end` after `start`)
  and are bounded (366 nights, 31 days of slots, a slot of at most a day): in positive test
  cases the end of a range is redrawn a little after its start (map_case).
- A layout has at most EVENT_MAX_SEATS seats, a seat list names each seat once, opening
  intervals go forwards without overlapping on the granularity's grid, a night patch changes
  something: positive cases that break these are dropped (filter_case).
"""

import random
import re
import uuid
from datetime import date, datetime, timedelta, timezone

import schemathesis

VALID_KEY = re.compile(r"^[!-~]{1,255}$")


def _negative(case):
    generation = getattr(getattr(case, "meta", None), "generation", None)
    return generation is not None and "negative" in str(getattr(generation, "mode", "")).lower()


def _shift(value, days=0, minutes=0):
    """`value` (a date or an instant, as text) moved forwards, in the same form; None past 9999."""
    day, instant = _day(value), _instant(value)
    try:
        if len(value) > 10 and instant is not None:
            moved = instant + timedelta(days=days, minutes=minutes)
            return moved.isoformat().replace("+00:00", "Z") if moved.year <= 9999 else None
        if day is not None:
            return (day + timedelta(days=max(days, 1))).isoformat()
    except OverflowError:
        return None
    return None


# (path test, where, first field, last field, the longest span in days)
RANGES = [
    (lambda p: p == "/v1/inventories" or p.endswith("/nights"), "body", "from", "to", 366),
    (lambda p: p.startswith("/v1/inventories/") and p.endswith("/holds"), "body", "check_in", "check_out", 366),
    (lambda p: p.startswith("/v1/inventories/") and p.endswith("/availability"), "query", "from", "to", 366),
    (lambda p: p.startswith("/v1/resources/") and p.endswith("/availability"), "query", "from", "to", 31),
]


@schemathesis.hook
def map_case(ctx, case):
    headers = case.headers
    if headers:
        for name in list(headers):
            if name.lower() == "idempotency-key" and isinstance(headers[name], str) and VALID_KEY.match(headers[name]):
                headers[name] = str(uuid.uuid4())
    if _negative(case):
        return case
    # Ranges go forwards and are bounded: a drawn `to` is replaced by `from` plus a few days.
    path = case.operation.path
    for applies, where, first, last, days in RANGES:
        values = case.body if where == "body" else case.query
        if applies(path) and isinstance(values, dict) and isinstance(values.get(first), str) and last in values:
            span = random.randint(1, min(days, 7))
            moved = _shift(values[first], days=span)
            if moved is None:  # too close to 9999: start in 2028 (a leap year) instead
                values[first] = "2028" + values[first][4:]
                moved = _shift(values[first], days=span)
            if moved is not None:
                values[last] = moved
    # A slot lasts at most a day: `end` is `start` plus whole hours.
    if (path.startswith("/v1/resources/") and path.endswith("/holds")) or path.endswith("/reschedule"):
        if isinstance(case.body, dict) and isinstance(case.body.get("start"), str) and "end" in case.body:
            moved = _shift(case.body["start"], minutes=60 * random.randint(1, 4))
            if moved is None:
                case.body["start"] = "2028" + case.body["start"][4:]
                moved = _shift(case.body["start"], minutes=60 * random.randint(1, 4))
            if moved is not None:
                case.body["end"] = moved
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


@schemathesis.hook
def filter_case(ctx, case):
    # Only drop cases that are meant to be valid: negative cases must still be refused.
    if _negative(case):
        return True
    path = case.operation.path
    return _valid_body(path, case.body)

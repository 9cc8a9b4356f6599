-- Seat lookups "these seat ids, in this event" (claims, probes, sales) run as prepared
-- statements with generic plans, which estimated "event_id = $1" as selective and combined the
-- primary key with a scan of the whole event's index range: 0.7 ms on a 10,000-seat event,
-- growing with the event. With both columns in one index the lookup stays a few index probes.
create index seats_id_event_idx on seats (id, event_id);

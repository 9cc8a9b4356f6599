-- Night changes may be stored compact (issue 10): a room hold's and a room confirm's change row
-- keeps each night it changed as `[night, capacity, overbooking_allowance, closed, held, booked,
-- version]` (`nights_compact`) instead of as the object readers get (`nights_json`, eight named
-- fields, `available` among them): about 90 bytes a night where the object takes about 200, in a
-- row written with every room request and kept as long as the change log keeps history. Seat
-- changes have been stored that way from the start (`[[id, status, version], ...]`).
--
-- Readers never see the stored form: the change feed, the history and the webhooks read through
-- `change_log`, whose `change_data` now expands compact nights to the very object `nights_json`
-- makes (`available` computed as it computes it), and the live streams' tailer expands them in
-- the service (`db::changes::tail`). Rows stored as objects stay as they are and read as before.
--
-- The service writes the compact form only with COMPACT_NIGHT_CHANGES, which stays off until no
-- instance of a release before this one serves: their tailers read a night change's data as it is
-- stored, and would stream a compact one to their clients as a change of no night. The triggers
-- (extensions, releases, expiries, cancellations, inventory changes) keep writing objects.

-- Both night forms are `stable`, as what they call is (`jsonb_build_array`, `jsonb_build_object`):
-- Postgres inlines a SQL function into the statement that calls it only when the function is
-- declared no less volatile than its body. `nights_json` was declared `immutable`, so every room
-- hold, room confirm and night trigger ran it as a function of its own, its body parsed and
-- planned again at each execution of the statement (BENCHMARKS.md, session 27).
create function nights_compact(n inventory_nights) returns jsonb language sql stable as $$
    select jsonb_build_array(n.night, n.capacity, n.overbooking_allowance, n.closed, n.held, n.booked, n.version)
$$;
alter function nights_json(inventory_nights) stable;

create or replace function change_data(p_type text, p_data jsonb) returns jsonb language sql immutable as $$
    select case when p_type = 'seats.changed' and jsonb_typeof(p_data) = 'array' then
                    jsonb_build_object('seats', coalesce((
                        select jsonb_agg(jsonb_build_object('id', e -> 0, 'status', e -> 1, 'version', e -> 2)
                                         order by ord)
                          from jsonb_array_elements(p_data) with ordinality as x(e, ord)), '[]'))
                when p_type in ('nights.changed', 'inventory.nights_changed') and jsonb_typeof(p_data) = 'array' then
                    jsonb_build_object('nights', coalesce((
                        select jsonb_agg(jsonb_build_object(
                                   'night', e -> 0, 'capacity', e -> 1, 'overbooking_allowance', e -> 2,
                                   'closed', e -> 3, 'held', e -> 4, 'booked', e -> 5,
                                   'available', case when (e ->> 3)::boolean then 0
                                                     else greatest((e ->> 1)::int8 + (e ->> 2)::int8
                                                                   - (e ->> 4)::int8 - (e ->> 5)::int8, 0) end,
                                   'version', e -> 6)
                                         order by ord)
                          from jsonb_array_elements(p_data) with ordinality as x(e, ord)), '[]'))
                else p_data end
$$;

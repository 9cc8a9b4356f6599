-- pgbench: the SQL of one hold request, as holdfast sends it for a new key whose lock is free
-- (no claim first): one transaction that says who acts (audit; in holdfast this rides on the
-- BEGIN), claims the seat in one statement (hold, seat, hold_seats, audit trigger), and writes
-- the idempotency record once, settled.
-- The seat lookup in bench_seats is the only extra statement (pgbench has no seat list): each
-- transaction takes the next seat, free like every seat a request of the run holds, on an event
-- that has not started (scripts/bench.sh sets them up), so every one claims its seat.
select seat_id, event_id from bench_seats where n = (select nextval('bench_seat_seq')) \gset
begin;
select set_config('holdfast.actor', 'pgbench', true), set_config('holdfast.actor_role', 'user', true),
       set_config('holdfast.request_id', '', true);
with hold as (
     insert into holds (id, event_id, user_id, status, expires_at)
     values (gen_random_uuid(), :event_id, 'pgbench', 'HELD', now() + 600 * interval '1 second')
     returning id, expires_at, created_at
 ), claimed as (
     update seats
        set hold_id = (select id from hold), hold_expires_at = (select expires_at from hold), version = version + 1
      where event_id = :event_id and id = any(array[:seat_id::uuid])
        and booking_id is null
        and (hold_id is null or hold_expires_at <= now())
        and exists (select 1 from events e where e.id = :event_id and e.starts_at > now())
     returning id, price_cents
 ), recorded as (
     insert into hold_seats (hold_id, seat_id) select (select id from hold), id from claimed returning seat_id
 )
 select array(select seat_id from recorded order by seat_id) as claimed,
        (select coalesce(sum(price_cents), 0)::int8 from claimed) as total_cents,
        hold.expires_at, hold.created_at
   from hold;
insert into idempotency_records
       (user_id, key, fingerprint, state, claim_token, lease_until, response_status, response_body)
values ('pgbench', gen_random_uuid()::text, '\x00', 'SUCCEEDED', gen_random_uuid(), now(), 201,
        '{"id":"00000000-0000-0000-0000-000000000000","status":"HELD","seat_ids":[],"total_cents":1000}')
on conflict (user_id, key) do nothing;
commit;

-- pgbench: the SQL of one hold request, as holdfast sends it (claim the key, then one
-- transaction: who acts (audit), insert the hold, claim the seat, record it, read it back,
-- complete the key).
-- The seat lookup in bench_seats is the only extra statement (pgbench has no seat list).
\set n random(1, :nseats)
select seat_id, event_id from bench_seats where n = :n \gset
insert into idempotency_records (user_id, key, fingerprint, state, claim_token, lease_until)
  values ('pgbench', gen_random_uuid()::text, '\x00', 'IN_PROGRESS', gen_random_uuid(), now() + 30000 * interval '1 millisecond')
  on conflict (user_id, key) do nothing
  returning key \gset
begin;
select set_config('holdfast.actor', 'pgbench', true), set_config('holdfast.actor_role', 'user', true),
       set_config('holdfast.request_id', '', true);
insert into holds (id, event_id, user_id, status, expires_at)
  values (gen_random_uuid(), :event_id, 'pgbench', 'HELD', now() + 600 * interval '1 second')
  returning id as hold_id, expires_at \gset
update seats set hold_id = :hold_id, hold_expires_at = :expires_at, version = version + 1
  where event_id = :event_id and id = any(array[:seat_id::uuid])
    and booking_id is null and (hold_id is null or hold_expires_at <= now())
  returning id;
insert into hold_seats (hold_id, seat_id) select :hold_id, unnest(array[:seat_id::uuid]);
select h.id, h.event_id, h.user_id, h.status, h.expires_at, h.created_at, h.version,
       h.expires_at <= now() as expired,
       coalesce(array_agg(hs.seat_id order by hs.seat_id) filter (where hs.seat_id is not null), '{}') as seat_ids,
       coalesce(sum(s.price_cents), 0)::int8 as total_cents
  from holds h left join hold_seats hs on hs.hold_id = h.id left join seats s on s.id = hs.seat_id
 where h.id = :hold_id group by h.id;
update idempotency_records set state = 'SUCCEEDED', response_status = 201, response_body = '{}', updated_at = now()
 where user_id = 'pgbench' and key = :key and state = 'IN_PROGRESS';
commit;

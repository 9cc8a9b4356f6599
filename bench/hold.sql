-- pgbench: the SQL of one hold request, as holdfast sends it for a new key whose lock is free
-- (no claim first): one transaction whose BEGIN says who acts and which hold writes its own
-- change row (`db::write_tx`), one statement that claims the seat, inserts the hold with its
-- seat list and writes its change row (`db::holds::create`, parameters in place), and the
-- idempotency record, written once, settled, with COMMIT. `:ttl` is the hold's life in seconds
-- (scripts/bench.sh: 600; scripts/bench-parts.sh, which runs this file as its last part: 1).
-- The seat lookup in bench_seats is the only extra statement (pgbench has no seat list): each
-- transaction takes the next seat, free like every seat a request of the run holds, on an event
-- that has not started (scripts/bench.sh sets them up), so every one claims its seat.
select seat_id, event_id, gen_random_uuid() as hold_id from bench_seats where n = (select nextval('bench_seat_seq')) \gset
begin;
select set_config('plan_cache_mode', 'force_generic_plan', true), set_config('holdfast.actor', 'pgbench', true),
       set_config('holdfast.actor_role', 'user', true), set_config('holdfast.request_id', '', true),
       set_config('holdfast.logged_hold', :hold_id, true);
with claimed as (
     update seats
        set hold_id = :hold_id, hold_expires_at = now() + :ttl::int8 * interval '1 second', version = version + 1
      where event_id = :event_id and id = any(array[:seat_id::uuid])
        and booking_id is null
        and (hold_id is null or hold_expires_at <= now())
        and exists (select 1 from events e
                     where e.id = :event_id and e.starts_at > now()
                       and (false or ((e.on_sale_at is null or e.on_sale_at <= now())
                                   and (not e.queue_enabled
                                        or exists (select 1 from queue_tickets t
                                                    where t.id = null::uuid and t.event_id = :event_id and t.user_id = 'pgbench'
                                                      and t.status = 'admitted'
                                                      and t.admission_expires_at > now())))))
     returning id, price_cents, version
 ), hold as (
     insert into holds (id, event_id, user_id, status, expires_at, seat_ids)
     values (:hold_id, :event_id, 'pgbench', 'HELD', now() + :ttl::int8 * interval '1 second',
             array(select id from claimed order by id))
     returning expires_at, created_at, seat_ids
 ), logged as (
     insert into audit_log (hold_id, entity, to_status, detail, type, scope_id, data, actor, actor_role, request_id)
     select :hold_id, 'hold', 'HELD', jsonb_build_object('expires_at', hold.expires_at), 'seats.changed', :event_id,
            coalesce((select jsonb_agg(jsonb_build_array(c.id, 'HELD', c.version) order by c.id) from claimed c),
                     '[]'),
            change_actor(), change_actor_role(), change_request_id()
       from hold
      where change_logged_hold() = :hold_id
 )
 select hold.seat_ids as claimed,
        (select coalesce(sum(price_cents), 0)::int8 from claimed) as total_cents,
        hold.expires_at as expires_at, hold.created_at as created_at,
        (select max_seats_per_buyer from events where id = :event_id) as buyer_limit
   from hold;
-- The answer as the service keeps it by default: packed, about 120 bytes (IDEMPOTENCY_PACKED_ANSWERS).
insert into idempotency_records (user_id, key, fingerprint, state, claim_token, lease_until, response_status, response_packed)
  values ('pgbench', gen_random_uuid()::text, '\x00', 'SUCCEEDED', gen_random_uuid(), now(), 201,
          '\x01'::bytea || decode(repeat('5a', 119), 'hex'));
commit;

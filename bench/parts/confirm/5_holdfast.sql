-- Confirm part 5, a confirm as holdfast sends it: the plan's read of the hold (`holds::find`,
-- before the transaction), BEGIN's settings, `bookings::confirm_hold`'s statement for seats
-- (parameters in place), the settled record with COMMIT: the writes of parts 1-4, and their
-- checks. scripts/bench-parts.sh (`... confirm`) runs it after bench/hold.sql, as one pgbench
-- script. The booking's id is derived from the hold's (pgbench makes no UUIDs of its own).
with by_id as materialized (select :hold_id::uuid as id)
select h.id, h.user_id, h.status, h.expires_at, h.created_at, h.version, h.expires_at <= now() as expired,
       h.event_id, h.inventory_id, h.resource_id, coalesce(st.seat_ids, '{}') as seat_ids, coalesce(st.total_cents, 0)::int8 as total_cents,
     hn.check_in, hn.check_out, hn.quantity, lower(sc.span) as slot_start, upper(sc.span) as slot_end
  from by_id join holds h on h.id = by_id.id
  left join lateral (select array_agg(hs.seat_id order by hs.seat_id) as seat_ids, sum(s.price_cents) as total_cents
                              from hold_seats hs join seats s on s.id = hs.seat_id
                             where hs.hold_id = h.id) st on true
         left join lateral (select min(night) as check_in, max(night) + 1 as check_out, max(quantity) as quantity
                              from hold_nights where hold_id = h.id) hn on true
         left join slot_claims sc on sc.hold_id = h.id;
begin;
select set_config('plan_cache_mode', 'force_generic_plan', true), set_config('holdfast.actor', 'pgbench', true),
       set_config('holdfast.actor_role', 'user', true), set_config('holdfast.request_id', '', true),
       set_config('holdfast.logged_hold', :hold_id, true);
with moved as (
             update holds set status = 'CONFIRMED', version = version + 1, updated_at = now()
              where id = :hold_id and version = 0 and status = 'HELD' and expires_at > now()
             returning id, event_id
         ), booking as (
             insert into bookings (id, event_id, hold_id, user_id, status, payment_reference, total_cents)
             select md5(:hold_id)::uuid, event_id, id, 'pgbench', 'CONFIRMED', null::text, 1000 from moved
             returning created_at
         ), sold as (
             update seats set booking_id = md5(:hold_id)::uuid, hold_id = null, hold_expires_at = null, version = version + 1
              where id = any(array[:seat_id::uuid]) and hold_id = :hold_id and hold_expires_at > now() and booking_id is null
                and exists (select 1 from booking)
             returning id, version
         ), logged as (
             insert into audit_log (hold_id, booking_id, entity, hold_from_status, to_status, type, scope_id, data,
                                    actor, actor_role, request_id)
             select :hold_id, md5(:hold_id)::uuid, 'booking', 'HELD', 'CONFIRMED', 'seats.changed', moved.event_id,
                    coalesce((select jsonb_agg(jsonb_build_array(s.id, 'BOOKED', s.version) order by s.id)
                                from sold s), '[]'),
                    change_actor(), change_actor_role(), change_request_id()
               from moved
              where change_logged_hold() = :hold_id and exists (select 1 from booking)
         ), recorded as (
             insert into booking_seats (booking_id, seat_id) select md5(:hold_id)::uuid, id from sold returning seat_id
         ), admission_ended as (
             -- A confirmed booking ends the buyer's waiting-room admission for the event.
             update queue_tickets t set status = 'booked', ended_at = now()
               from moved
              where t.event_id = moved.event_id and t.user_id = 'pgbench' and t.status = 'admitted'
             returning 1
         )
         select exists (select 1 from moved) as moved,
                array(select seat_id from recorded order by seat_id) as sold,
                (select created_at from booking) as created_at,
                0::int8 as nights_moved;
insert into idempotency_records (user_id, key, fingerprint, state, claim_token, lease_until, response_status, response_body)
  values ('pgbench', gen_random_uuid()::text, '\x00', 'SUCCEEDED', gen_random_uuid(), now(), 201,
          '{"id":"00000000-0000-0000-0000-000000000000","status":"CONFIRMED","hold_id":"00000000-0000-0000-0000-000000000000","event_id":"00000000-0000-0000-0000-000000000000","seat_ids":["00000000-0000-0000-0000-000000000000"],"total_cents":1000,"payment_reference": null,"created_at":"2026-12-06T19:00:00.000000Z"}');
commit;

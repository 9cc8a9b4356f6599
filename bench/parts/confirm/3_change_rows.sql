-- Confirm part 3: the confirm's two change rows (the hold's, and the booking's with the seats
-- sold).
-- scripts/bench-parts.sh (`... confirm`) runs each part after bench/hold.sql and every part
-- before it, then bench/parts/commit.sql, as one pgbench script; its Postgres CPU less
-- bench/hold.sql's alone, run beside it, is what the confirm costs. The booking's id is derived
-- from the hold's (pgbench makes no UUIDs of its own).
insert into audit_log (hold_id, booking_id, entity, from_status, to_status, type, scope_id, data, actor, actor_role, request_id)
  values (:hold_id, null, 'hold', 'HELD', 'CONFIRMED', null, null, null, 'pgbench', 'user', ''),
         (:hold_id, md5(:hold_id)::uuid, 'booking', null, 'CONFIRMED', 'seats.changed', :event_id,
          jsonb_build_array(jsonb_build_array(:seat_id::uuid, 'BOOKED', 2)), 'pgbench', 'user', '');

-- Confirm part 1, the least a confirm needs, on holdfast's tables: the hold CONFIRMED, a
-- booking inserted, the seat pointed at it (the transaction is the hold's logged one, as
-- holdfast's BEGIN says, so the audit triggers leave the change rows to part 3).
-- scripts/bench-parts.sh (`... confirm`) runs each part after bench/hold.sql and every part
-- before it, then bench/parts/commit.sql, as one pgbench script; its Postgres CPU less
-- bench/hold.sql's alone, run beside it, is what the confirm costs. The booking's id is derived
-- from the hold's (pgbench makes no UUIDs of its own).
begin;
select set_config('holdfast.logged_hold', :hold_id, true);
update holds set status = 'CONFIRMED', version = version + 1, updated_at = now()
 where id = :hold_id and version = 0 and status = 'HELD' and expires_at > now();
insert into bookings (id, event_id, hold_id, user_id, status, payment_reference, total_cents)
  values (md5(:hold_id)::uuid, :event_id, :hold_id, 'pgbench', 'CONFIRMED', null, 1000);
update seats set booking_id = md5(:hold_id)::uuid, hold_id = null, hold_expires_at = null, version = version + 1
 where id = :seat_id and hold_id = :hold_id and booking_id is null;

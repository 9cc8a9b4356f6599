-- Confirm part 2: the sale's `booking_seats` row (its partial unique index refuses a second
-- live sale of a seat).
-- scripts/bench-parts.sh (`... confirm`) runs each part after bench/hold.sql and every part
-- before it, then bench/parts/commit.sql, as one pgbench script; its Postgres CPU less
-- bench/hold.sql's alone, run beside it, is what the confirm costs. The booking's id is derived
-- from the hold's (pgbench makes no UUIDs of its own).
insert into booking_seats (booking_id, seat_id) values (md5(:hold_id)::uuid, :seat_id);

-- Part 3, as before session 18: the list of seats as one `hold_seats` row per seat (the table
-- is `hold_seats_before` since the migration `hold_seats_in_the_hold_row`), for comparison.
\set n random(1, :nseats)
begin;
select s.id as seat_id, s.event_id, h.id as hold_id, set_config('holdfast.logged_hold', h.id::text, true)
  from (select gen_random_uuid() as id) h, bench_seats b join seats s on s.id = b.seat_id
 where b.n = :n for update of s \gset
insert into holds (id, event_id, user_id, status, expires_at)
  values (:hold_id, :event_id, 'pgbench', 'HELD', now() + interval '1 second' * :ttl);
insert into hold_seats_before (hold_id, seat_id) values (:hold_id, :seat_id);
update seats set hold_id = :hold_id, hold_expires_at = now() + interval '1 second' * :ttl, version = version + 1
 where id = :seat_id;
commit;

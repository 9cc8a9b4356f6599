-- Part 3: part 2 with the hold's list of seats in its row (`holds.seat_ids`), for reads after the
-- seats are freed.
\set n random(1, :nseats)
begin;
select s.id as seat_id, s.event_id, h.id as hold_id, set_config('holdfast.logged_hold', h.id::text, true)
  from (select gen_random_uuid() as id) h, bench_seats b join seats s on s.id = b.seat_id
 where b.n = :n for update of s \gset
insert into holds (id, event_id, user_id, status, expires_at, seat_ids)
  values (:hold_id, :event_id, 'pgbench', 'HELD', now() + interval '1 second' * :ttl, array[:seat_id::uuid]);
update seats set hold_id = :hold_id, hold_expires_at = now() + interval '1 second' * :ttl, version = version + 1
 where id = :seat_id;

-- Part 2: part 1 (bench/minimal_hold.sql, the least work a hold needs) on holdfast's `holds` and
-- `seats`: their indexes, checks and triggers. The hold is the transaction's logged hold, as
-- holdfast's BEGIN says, so the audit triggers leave it to the hold's own change row (part 4).
\set n random(1, :nseats)
begin;
select s.id as seat_id, s.event_id, h.id as hold_id, set_config('holdfast.logged_hold', h.id::text, true)
  from (select gen_random_uuid() as id) h, bench_seats b join seats s on s.id = b.seat_id
 where b.n = :n for update of s \gset
insert into holds (id, event_id, user_id, status, expires_at)
  values (:hold_id, :event_id, 'pgbench', 'HELD', now() + interval '1 second' * :ttl);
update seats set hold_id = :hold_id, hold_expires_at = now() + interval '1 second' * :ttl, version = version + 1
 where id = :seat_id;

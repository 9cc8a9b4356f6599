-- pgbench: the least work a hold needs, independent of holdfast's schema and SQL (the second
-- ceiling, issue 10): lock the seat, insert the hold, point the seat at it, commit. One
-- transaction, on two plain tables with nothing but primary keys (bench/minimal_schema.sql): no
-- idempotency record, no audit, no read-back. `bench_seats` maps a random number to a seat
-- (pgbench has no seat list); the lookup and the lock are one statement.
\set n random(1, :nseats)
begin;
select s.id as seat_id, s.event_id from bench_seats b join minimal_seats s on s.id = b.seat_id
 where b.n = :n for update of s \gset
insert into minimal_holds (id, event_id, user_id, status, expires_at)
  values (gen_random_uuid(), :event_id, 'pgbench', 'HELD', now() + interval '10 minutes')
  returning id as hold_id \gset
update minimal_seats set hold_id = :hold_id, hold_expires_at = now() + interval '10 minutes', version = version + 1
 where id = :seat_id;
commit;

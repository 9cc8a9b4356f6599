-- The seats pgbench's hold transactions claim (scripts/bench.sh's ceilings, scripts/bench-parts.sh):
-- :seats seats of one event that has not started, `bench_seats` numbering them from 1 (for
-- bench/minimal_hold.sql's random pick) and `bench_seat_seq` handing them out in turn (for
-- bench/hold.sql). Run with `psql -v seats=N -f bench/seats.sql`.
insert into events (id, name, starts_at, created_by)
  values ('00000000-0000-7000-8000-000000000001', 'ceiling', now() + interval '1 year', 'bench');
insert into seats (id, event_id, section, row_label, number, price_cents)
  select gen_random_uuid(), '00000000-0000-7000-8000-000000000001', 'A', (g / 50)::text, g % 50 + 1, 1000
    from generate_series(0, :seats - 1) g;
create table bench_seats as select row_number() over () as n, id as seat_id, event_id from seats;
create unique index on bench_seats (n);
create sequence bench_seat_seq maxvalue :seats cycle;

-- A lean write path (issue 10, seventh round): a seat hold keeps the ids of its seats in its own
-- row (`holds.seat_ids`) instead of one `hold_seats` row per seat.
--
-- Measured with pgbench, each part of a hold's SQL added in turn (scripts/bench-parts.sh,
-- BENCHMARKS.md session 18): the `hold_seats` row of a one-seat hold (a heap insert and its
-- primary key's btree insert, each with its WAL record) was 160 bytes of WAL and up to 0.1 ms of
-- Postgres's CPU; the array costs 40. The hold row is written anyway; the array adds 16 bytes a
-- seat to it. The service, one seat per hold: WAL per hold 2,009 -> 1,866 bytes.
--
-- Rolling upgrades: migrations run at start-up (README), so instances of the previous release
-- keep serving beside this schema until they are replaced. They read a hold's seats from
-- `hold_seats` and write them there. So `hold_seats` becomes a view of both stores: the rows
-- written before this release (kept in `hold_seats_before`), and each hold's `seat_ids`. An
-- insert into the view (a previous release's hold) lands in `hold_seats_before`, so its reads
-- find it. This release reads through the view too; a later release may fold the old rows into
-- `seat_ids` and drop the table.
--
-- `seat_ids` is null for room and slot holds (their detail is in `hold_nights` and
-- `slot_claims`) and for seat holds made before this release.

alter table holds add column seat_ids uuid[];

alter table hold_seats rename to hold_seats_before;
alter index hold_seats_pkey rename to hold_seats_before_pkey;

create view hold_seats as
    select hold_id, seat_id from hold_seats_before
    union all
    select h.id, s.seat_id from holds h cross join lateral unnest(h.seat_ids) as s (seat_id);

create function hold_seats_insert() returns trigger language plpgsql as $$
begin
    insert into hold_seats_before (hold_id, seat_id) values (new.hold_id, new.seat_id);
    return new;
end
$$;

create trigger hold_seats_insert instead of insert on hold_seats
    for each row execute function hold_seats_insert();

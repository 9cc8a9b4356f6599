-- A lean write path (issue 10, fifth round): less work that Postgres redoes for every statement
-- of a hold or a confirm, every guarantee unchanged.
--
-- 1. Trigger conditions without SQL-function calls. A trigger's WHEN clause is read back from
--    its stored text and prepared afresh in every statement that fires the trigger, and
--    preparing it inlines every SQL function it calls, which means parsing and analysing that
--    function's body each time. `change_logged_hold()` appeared seven times in the conditions
--    of the five triggers a hold or a confirm meets (four in `seats_change_unlogged`'s alone):
--    in a profile of the `spread` benchmark (`perf record`, BENCHMARKS.md session 16), preparing
--    those conditions was about 5% of Postgres's CPU. The conditions below read the setting
--    itself, a plain expression (the same meaning: the hold named by `holdfast.logged_hold`, or
--    none when it is unset or empty).
--
-- 2. The write path's foreign keys to holds, bookings and seats go. Each one ran a query per row
--    written (a `FOR KEY SHARE` lock on the row it names, with a WAL record of about 55 bytes:
--    2.6 such records per request on `spread`), yet none could fail: every row they checked
--    names a hold or booking that the same transaction inserted (a hold's seats are claimed,
--    and recorded in `hold_seats`, with the hold; a booking's seats are sold, and recorded in
--    `booking_seats`, with the booking; a room hold's nights and a slot claim are written with
--    their hold), or the hold a booking confirms, or a seat the transaction has just claimed or
--    found, and holds, bookings and seats are never deleted (no code path does). The guarantee is kept by construction and checked:
--    `holdfast::db::invariants` reports any row naming a hold, booking or seat that does not
--    exist ("claim or record of an unknown hold, booking, seat or night"), in tests, after every
--    benchmark run and in the periodic check, as for the keys dropped before (migrations
--    `lean_write_path` and `audit_history_without_foreign_keys`). A room hold's nights lose
--    their key to the inventory's nights for the same reason: the statement that records them
--    takes them from the nights it has just updated, and nights are never deleted. The key of
--    seats to their event stays (no statement of the write path writes it).

drop trigger holds_audit_insert on holds;
create trigger holds_audit_insert after insert on holds for each row
    when (new.id is distinct from nullif(current_setting('holdfast.logged_hold', true), '')::uuid)
    execute function holds_audit();
drop trigger holds_audit_update on holds;
create trigger holds_audit_update after update on holds for each row
    when ((new.status is distinct from old.status or new.expires_at is distinct from old.expires_at)
          and new.id is distinct from nullif(current_setting('holdfast.logged_hold', true), '')::uuid)
    execute function holds_audit();

drop trigger bookings_audit_insert on bookings;
create trigger bookings_audit_insert after insert on bookings for each row
    when (new.hold_id is distinct from nullif(current_setting('holdfast.logged_hold', true), '')::uuid)
    execute function bookings_audit();

drop trigger seats_changed on seats;
create trigger seats_changed after update on seats
    referencing old table as old_rows new table as new_rows
    for each statement when (nullif(current_setting('holdfast.logged_hold', true), '') is null)
    execute function seats_changed();

drop trigger seats_change_unlogged on seats;
create trigger seats_change_unlogged after update on seats for each row
    when (nullif(current_setting('holdfast.logged_hold', true), '') is not null
          and (new.hold_id is distinct from old.hold_id or new.booking_id is distinct from old.booking_id)
          and not (new.hold_id is not distinct from nullif(current_setting('holdfast.logged_hold', true), '')::uuid
                   and new.booking_id is null)
          and not (old.hold_id is not distinct from nullif(current_setting('holdfast.logged_hold', true), '')::uuid
                   and old.booking_id is null and new.booking_id is not null))
    execute function seats_change_unlogged();

alter table seats
    drop constraint seats_hold_id_fkey,
    drop constraint seats_booking_id_fkey;
alter table hold_seats
    drop constraint hold_seats_hold_id_fkey,
    drop constraint hold_seats_seat_id_fkey;
alter table booking_seats
    drop constraint booking_seats_booking_id_fkey,
    drop constraint booking_seats_seat_id_fkey;
alter table bookings drop constraint bookings_hold_id_fkey;
alter table hold_nights
    drop constraint hold_nights_hold_id_fkey,
    drop constraint hold_nights_inventory_id_night_fkey;
alter table slot_claims drop constraint slot_claims_hold_id_fkey;

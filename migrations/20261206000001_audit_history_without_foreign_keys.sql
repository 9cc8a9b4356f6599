-- A lean write path (issue 10, third round): the change log's history rows no longer check
-- their hold and booking through foreign keys.
--
-- Every history row is written by the AFTER trigger of the very hold or booking row it names
-- (`holds_audit`, `bookings_audit`), in the same statement, and holds and bookings are never
-- deleted (no code path does; `audit_log` keeps history for ever). The two foreign keys could
-- therefore never fail, yet each cost a query per history row (two or three per request: a
-- `FOR KEY SHARE` lock on the hold or booking, a WAL record, an executor start). Measured with
-- pgbench on bench/hold.sql, three alternating pairs: +5..12% transactions per second.
--
-- The guarantee is kept by construction and checked: `holdfast::db::invariants` reports a
-- history row whose hold or booking does not exist ("history row of an unknown hold or
-- booking"), in tests, after every benchmark run and in the periodic check.
alter table audit_log
    drop constraint audit_log_hold_id_fkey,
    drop constraint audit_log_booking_id_fkey;

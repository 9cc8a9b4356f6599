-- When a periodic job that the whole cluster needs once per interval last started, and what it
-- found. The integrity check (`db::invariants`, full scans of seats, holds, bookings and more)
-- ran on every instance's own timer: the advisory lock only kept the runs from overlapping, so N
-- instances scanned N times an interval. An instance now runs it only if it can move
-- `started_at` forward (the last run began at least three quarters of an interval ago: the
-- timers are jittered by a fifth either way); the others publish the stored `result`.
create table periodic_runs (
    job          text primary key,
    started_at   timestamptz not null,
    finished_at  timestamptz,
    -- The last finished run's findings: the count of offending rows by check, for the checks
    -- that found any (so {} when every invariant held).
    result       jsonb
);

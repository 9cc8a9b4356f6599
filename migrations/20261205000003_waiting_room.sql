-- A fair waiting room per event (issue 13, part 2).
--
-- The queue's settings live on the event (they are part of it, shown with it, and their change
-- is an `event.updated` change); the pacing state lives in queue_state, one row per event whose
-- queue was ever enabled, so that pacing (several times a second) never rewrites the event row.
alter table events
    add column queue_enabled boolean not null default false,
    add column queue_admit_per_minute integer not null default 600
        constraint events_queue_admit_per_minute_range check (queue_admit_per_minute between 0 and 1000000),
    add column queue_max_active_shoppers integer not null default 1000
        constraint events_queue_max_active_shoppers_range check (queue_max_active_shoppers between 1 and 1000000),
    add column queue_admission_ttl_seconds integer not null default 600
        constraint events_queue_admission_ttl_range check (queue_admission_ttl_seconds between 1 and 86400);

-- One row per event with a queue. `secret` signs the event's admission tokens (every instance
-- reads it with the pacing state, so a token is verified without a database read). Pacing:
-- `credit` is a token bucket of admissions (refilled at queue_admit_per_minute from `paced_at`,
-- by Postgres's clock); `next_rank` the last rank given; `admitted_through` the highest rank
-- admitted so far (positions are counted from it); `drawn_at` when the early joiners were put
-- in random order.
create table queue_state (
    event_id uuid primary key references events (id),
    secret bytea not null constraint queue_state_secret_length check (length(secret) = 32),
    drawn_at timestamptz,
    next_rank bigint not null default 0,
    admitted_through bigint not null default 0,
    credit double precision not null default 0,
    paced_at timestamptz
);

-- A ticket: one per user and event, for good (leaving does not give a new place in the line).
-- `early`: joined before on_sale_at, so placed by the draw. `rank`: the place in line, given by
-- the draw (early joiners, in random order) or at join (later arrivals, in order); null until
-- then. No foreign key to events: the join statement reads the event row it needs, and a key
-- would make every join lock that one hot row (see 20261203000002_lean_write_path).
create table queue_tickets (
    id uuid primary key,
    event_id uuid not null,
    user_id text not null,
    joined_at timestamptz not null default now(),
    early boolean not null,
    rank bigint,
    status text not null default 'waiting'
        constraint queue_tickets_status_known check (status in ('waiting', 'admitted', 'expired', 'booked', 'left')),
    admitted_at timestamptz,
    admission_expires_at timestamptz,
    ended_at timestamptz,
    constraint queue_tickets_one_per_user unique (event_id, user_id),
    constraint queue_tickets_admission_complete
        check (status not in ('admitted', 'expired') or (admitted_at is not null and admission_expires_at is not null))
);
-- The next to admit, in order.
create index queue_tickets_waiting on queue_tickets (event_id, rank) where status = 'waiting';
-- Admissions to count and to expire.
create index queue_tickets_admitted on queue_tickets (event_id, admission_expires_at) where status = 'admitted';

-- A queue setting's change is an event change too (`event.updated`); pacing never touches the
-- event row.
drop trigger events_updated on events;
create trigger events_updated after update on events for each row
    when ((new.on_sale_at, new.max_seats_per_buyer, new.queue_enabled, new.queue_admit_per_minute,
           new.queue_max_active_shoppers, new.queue_admission_ttl_seconds)
          is distinct from
          (old.on_sale_at, old.max_seats_per_buyer, old.queue_enabled, old.queue_admit_per_minute,
           old.queue_max_active_shoppers, old.queue_admission_ttl_seconds))
    execute function event_updated();

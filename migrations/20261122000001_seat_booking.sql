-- Seat booking: events, seats, holds, bookings, and the idempotency records.
--
-- Postgres is the fence. Redis locks only keep a stampede from queueing on row locks;
-- every rule below holds even when a lock expired under a paused process.

create table events (
    id          uuid primary key,
    name        text not null constraint events_name_length check (char_length(name) between 1 and 200),
    starts_at   timestamptz not null,
    created_by  text not null,
    created_at  timestamptz not null default now()
);

create table holds (
    id          uuid primary key,
    event_id    uuid not null references events (id),
    user_id     text not null,
    status      text not null
                constraint holds_status_valid check (status in ('HELD', 'CONFIRMED', 'RELEASED', 'EXPIRED')),
    expires_at  timestamptz not null,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    version     bigint not null default 0
);
-- The sweeper's queue: only live holds, ordered by expiry.
create index holds_expiring_idx on holds (expires_at) where status = 'HELD';

create table bookings (
    id                uuid primary key,
    event_id          uuid not null references events (id),
    hold_id           uuid not null references holds (id)
                      constraint bookings_one_per_hold unique,
    user_id           text not null,
    status            text not null
                      constraint bookings_status_valid check (status in ('CONFIRMED', 'CANCELLED')),
    payment_reference text,
    total_cents       bigint not null constraint bookings_total_nonnegative check (total_cents >= 0),
    created_at        timestamptz not null default now(),
    cancelled_at      timestamptz,
    version           bigint not null default 0,
    constraint bookings_cancelled_has_time check ((status = 'CANCELLED') = (cancelled_at is not null))
);
create index bookings_by_user_idx on bookings (user_id, created_at desc, id desc);

create table seats (
    id               uuid primary key,
    event_id         uuid not null references events (id),
    section          text not null,
    row_label        text not null,
    number           integer not null constraint seats_number_positive check (number > 0),
    price_cents      bigint not null constraint seats_price_nonnegative check (price_cents >= 0),
    -- The live claim on the seat, if any. A hold past hold_expires_at is free at once,
    -- whether or not the sweeper has cleared it yet.
    hold_id          uuid references holds (id),
    hold_expires_at  timestamptz,
    booking_id       uuid references bookings (id),
    version          bigint not null default 0,
    constraint seats_label_unique unique (event_id, section, row_label, number),
    constraint seats_hold_has_expiry check ((hold_id is null) = (hold_expires_at is null)),
    constraint seats_single_claim check (hold_id is null or booking_id is null)
);
create index seats_event_order_idx on seats (event_id, section, row_label, number);
create index seats_hold_idx on seats (hold_id) where hold_id is not null;

-- Which seats a hold covered (kept after the hold ends, for reads and audits).
create table hold_seats (
    hold_id  uuid not null references holds (id),
    seat_id  uuid not null references seats (id),
    primary key (hold_id, seat_id)
);

-- Which seats a booking sold. The partial unique index is the last guard against a
-- double sale: two live bookings of one seat cannot both commit, whatever the locks did.
create table booking_seats (
    booking_id  uuid not null references bookings (id),
    seat_id     uuid not null references seats (id),
    active      boolean not null default true,
    primary key (booking_id, seat_id)
);
create unique index booking_seats_one_live_sale on booking_seats (seat_id) where active;

-- Idempotency: one row per (caller, key). Claimed in its own short statement, completed
-- in the same transaction as the business writes, guarded by claim_token.
create table idempotency_records (
    user_id          text not null,
    key              text not null constraint idempotency_key_length check (char_length(key) between 1 and 255),
    fingerprint      bytea not null,
    state            text not null
                     constraint idempotency_state_valid check (state in ('IN_PROGRESS', 'SUCCEEDED', 'FAILED')),
    claim_token      uuid not null,
    lease_until      timestamptz not null,
    response_status  smallint,
    response_body    jsonb,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    primary key (user_id, key),
    constraint idempotency_succeeded_has_response
        check (state <> 'SUCCEEDED' or (response_status is not null and response_body is not null))
);
create index idempotency_stale_leases_idx on idempotency_records (lease_until) where state = 'IN_PROGRESS';
create index idempotency_age_idx on idempotency_records (updated_at);

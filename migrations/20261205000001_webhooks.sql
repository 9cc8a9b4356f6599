-- Signed webhooks (issue 12): endpoints registered by admins, one delivery row per change event
-- and endpoint, and one row per attempt.
--
-- Fan-out: each endpoint keeps its own position in the change log (`cursor_txid`, `cursor_id`,
-- read with the same commit-safe gate as the feed). An instance locks the endpoint row
-- (`for update skip locked`), reads the events after its cursor, inserts their deliveries and
-- moves the cursor in one transaction: every event is queued once per endpoint, whichever
-- instance does it, and an event whose transaction rolled back never reaches the log at all.
--
-- Delivery: an instance claims due deliveries (`for update skip locked`), counts the attempt
-- and pushes `next_attempt_at` past the request timeout (a lease), then sends. An instance that
-- dies mid-flight leaves the lease to run out; another instance then sends again (at least once).

create table webhook_endpoints (
    id              uuid primary key,
    url             text not null constraint webhook_endpoints_url_length check (length(url) between 1 and 2048),
    description     text constraint webhook_endpoints_description_length check (length(description) <= 500),
    event_types     text[] not null constraint webhook_endpoints_event_types_present check (cardinality(event_types) between 1 and 64),
    -- `whsec_` + base64 of the key: shown once, when the endpoint is created.
    secret          text not null,
    created_by      text not null,
    created_at      timestamptz not null default now(),
    -- Events after this position are still to be queued. It starts where the readable log ends
    -- at creation: every event of a transaction still running then, or later, is delivered.
    cursor_txid     xid8 not null default pg_snapshot_xmin(pg_current_snapshot()),
    cursor_id       bigint not null default 0,
    -- Since when every attempt has failed (null once one succeeds).
    failing_since   timestamptz,
    disabled_at     timestamptz,
    disabled_reason text,
    constraint webhook_endpoints_disabled_says_why check ((disabled_at is null) = (disabled_reason is null))
);

create table webhook_deliveries (
    endpoint_id     uuid not null references webhook_endpoints (id) on delete cascade,
    txid            xid8 not null,
    change_id       bigint not null,
    -- The change event's id: the `webhook-id` header, the same on every attempt.
    event_id        uuid not null,
    type            text not null,
    -- The exact body sent, so every attempt signs and sends the same bytes.
    payload         text not null,
    occurred_at     timestamptz not null,
    queued_at       timestamptz not null default now(),
    status          text not null default 'pending'
                    constraint webhook_deliveries_status check (status in ('pending', 'delivered', 'failed')),
    attempts        integer not null default 0,
    -- When pending: the next attempt is due (or, while one is in flight, its lease ends).
    next_attempt_at timestamptz not null default now(),
    last_status_code integer,
    last_error      text,
    finished_at     timestamptz,
    primary key (endpoint_id, txid, change_id)
);
create index webhook_deliveries_due_idx on webhook_deliveries (next_attempt_at) where status = 'pending';
create index webhook_deliveries_finished_idx on webhook_deliveries (finished_at) where status <> 'pending';

create table webhook_attempts (
    endpoint_id     uuid not null,
    txid            xid8 not null,
    change_id       bigint not null,
    attempt         integer not null,
    started_at      timestamptz not null,
    duration_ms     integer not null,
    -- The receiver's HTTP status, if it answered.
    status_code     integer,
    outcome         text not null constraint webhook_attempts_outcome check (outcome in
                        ('delivered', 'http_error', 'gone', 'timeout', 'connect_error', 'refused_target', 'error')),
    error           text,
    -- When the delivery will be tried again (null: delivered, given up, or endpoint disabled).
    next_attempt_at timestamptz,
    primary key (endpoint_id, txid, change_id, attempt),
    foreign key (endpoint_id, txid, change_id) references webhook_deliveries on delete cascade
);

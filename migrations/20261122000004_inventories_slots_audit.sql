-- Two more kinds of inventory on the same hold -> booking model, and an audit trail for all.
--
-- A hold (and the booking made from it) targets exactly one of: seats of an event, nights of a
-- quantity inventory, or a time slot on a resource. Postgres stays the fence for each kind:
-- per-night counters under a named CHECK, and a named exclusion constraint over slot ranges.

create extension if not exists btree_gist;

-- Quantity inventory (hotel room types, fare buckets): a capacity per night.
create table inventories (
    id                     uuid primary key,
    name                   text not null constraint inventories_name_length check (char_length(name) between 1 and 200),
    overbooking_allowance  integer not null default 0
                           constraint inventories_allowance_nonnegative check (overbooking_allowance >= 0),
    created_by             text not null,
    created_at             timestamptz not null default now()
);

-- One row per night on sale. `held` and `booked` move in the same transaction as the status
-- change of the hold or booking they count; the CHECK refuses any over-sale whatever the locks did.
create table inventory_nights (
    inventory_id           uuid not null references inventories (id),
    night                  date not null,
    capacity               integer not null constraint inventory_nights_capacity_nonnegative check (capacity >= 0),
    overbooking_allowance  integer not null constraint inventory_nights_allowance_nonnegative check (overbooking_allowance >= 0),
    closed                 boolean not null default false,
    held                   integer not null default 0 constraint inventory_nights_held_nonnegative check (held >= 0),
    booked                 integer not null default 0 constraint inventory_nights_booked_nonnegative check (booked >= 0),
    version                bigint not null default 0,
    primary key (inventory_id, night),
    constraint inventory_nights_not_oversold check (held + booked <= capacity + overbooking_allowance)
);

-- Time slots on a resource (rooms, doctors, courts): rules for valid slots live here.
create table resources (
    id                           uuid primary key,
    name                         text not null constraint resources_name_length check (char_length(name) between 1 and 200),
    time_zone                    text not null,
    opening_hours                jsonb not null,
    granularity_minutes          integer not null constraint resources_granularity_valid check (granularity_minutes between 1 and 1440),
    buffer_before_minutes        integer not null default 0 constraint resources_buffer_before_valid check (buffer_before_minutes between 0 and 1440),
    buffer_after_minutes         integer not null default 0 constraint resources_buffer_after_valid check (buffer_after_minutes between 0 and 1440),
    min_notice_minutes           integer not null default 0 constraint resources_notice_valid check (min_notice_minutes >= 0),
    cancellation_window_minutes  integer not null default 0 constraint resources_cancellation_window_valid check (cancellation_window_minutes >= 0),
    created_by                   text not null,
    created_at                   timestamptz not null default now()
);

alter table holds
    alter column event_id drop not null,
    add column inventory_id uuid references inventories (id),
    add column resource_id uuid references resources (id),
    add constraint holds_one_target check (num_nonnulls(event_id, inventory_id, resource_id) = 1);
alter table bookings
    alter column event_id drop not null,
    add column inventory_id uuid references inventories (id),
    add column resource_id uuid references resources (id),
    add constraint bookings_one_target check (num_nonnulls(event_id, inventory_id, resource_id) = 1);

-- The nights a room hold covers, and how many units of each (kept after the hold ends).
create table hold_nights (
    hold_id       uuid not null references holds (id),
    inventory_id  uuid not null,
    night         date not null,
    quantity      integer not null constraint hold_nights_quantity_positive check (quantity > 0),
    primary key (hold_id, night),
    foreign key (inventory_id, night) references inventory_nights (inventory_id, night)
);
create index hold_nights_night_idx on hold_nights (inventory_id, night);

-- The slot a hold (then its booking) occupies. `blocked` is the slot widened by the resource's
-- buffers; no two active claims on one resource may overlap there. A claim stays active while
-- its hold is HELD or its booking CONFIRMED, and is deactivated in the same transaction that ends them.
create table slot_claims (
    hold_id      uuid primary key references holds (id),
    resource_id  uuid not null references resources (id),
    span         tstzrange not null constraint slot_claims_span_valid check (not isempty(span) and lower_inc(span) and not upper_inc(span)),
    blocked      tstzrange not null constraint slot_claims_blocked_covers_span check (blocked @> span),
    active       boolean not null default true,
    constraint slot_claims_no_overlap exclude using gist (resource_id with =, blocked with &&) where (active)
);

-- Append-only audit trail of every state change of a hold or booking, written by triggers in
-- the same transaction as the change. Who and which request come from transaction-local
-- settings the service sets (`holdfast.actor`, `holdfast.actor_role`, `holdfast.request_id`);
-- a change made outside the service is still recorded, as `system`.
create table audit_log (
    id           bigint generated always as identity primary key,
    hold_id      uuid not null references holds (id),
    booking_id   uuid references bookings (id),
    entity       text not null constraint audit_log_entity_valid check (entity in ('hold', 'booking')),
    from_status  text,
    to_status    text not null,
    detail       jsonb,
    actor        text not null,
    actor_role   text not null,
    request_id   text,
    at           timestamptz not null default clock_timestamp()
);
create index audit_log_hold_idx on audit_log (hold_id, id);

create function audit_append() returns trigger language plpgsql as $$
begin
    raise exception 'audit_log is append-only' using errcode = 'P0001';
end $$;
create trigger audit_log_append_only before update or delete or truncate on audit_log
    for each statement execute function audit_append();

create function audit_record(p_hold uuid, p_booking uuid, p_entity text, p_from text, p_to text, p_detail jsonb)
returns void language plpgsql as $$
declare
    v_role text := coalesce(nullif(current_setting('holdfast.actor_role', true), ''), 'system');
begin
    -- Expiry is the clock's doing, even when a request's transaction carries it out.
    if p_to = 'EXPIRED' then
        v_role := 'system';
    end if;
    insert into audit_log (hold_id, booking_id, entity, from_status, to_status, detail, actor, actor_role, request_id)
    values (p_hold, p_booking, p_entity, p_from, p_to, p_detail,
            case when v_role = 'system' then 'system'
                 else coalesce(nullif(current_setting('holdfast.actor', true), ''), 'system') end,
            v_role,
            nullif(current_setting('holdfast.request_id', true), ''));
end $$;

create function holds_audit() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        perform audit_record(new.id, null, 'hold', null, new.status, jsonb_build_object('expires_at', new.expires_at));
    elsif new.status is distinct from old.status then
        perform audit_record(new.id, null, 'hold', old.status, new.status, null);
    elsif new.expires_at is distinct from old.expires_at then
        perform audit_record(new.id, null, 'hold', old.status, new.status,
                             jsonb_build_object('expires_at', new.expires_at, 'previous_expires_at', old.expires_at));
    end if;
    return null;
end $$;
create trigger holds_audit after insert or update on holds for each row execute function holds_audit();

create function bookings_audit() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        perform audit_record(new.hold_id, new.id, 'booking', null, new.status, null);
    elsif new.status is distinct from old.status then
        perform audit_record(new.hold_id, new.id, 'booking', old.status, new.status, null);
    end if;
    return null;
end $$;
create trigger bookings_audit after insert or update on bookings for each row execute function bookings_audit();

-- A rescheduled slot is a change of the booking too.
create function slot_claims_audit() returns trigger language plpgsql as $$
declare
    v_booking bookings%rowtype;
begin
    if new.span is distinct from old.span then
        select * into v_booking from bookings where hold_id = new.hold_id;
        perform audit_record(new.hold_id, v_booking.id, case when v_booking.id is null then 'hold' else 'booking' end,
                             coalesce(v_booking.status, 'HELD'), coalesce(v_booking.status, 'HELD'),
                             jsonb_build_object('rescheduled_from', jsonb_build_object('start', lower(old.span), 'end', upper(old.span)),
                                                'rescheduled_to', jsonb_build_object('start', lower(new.span), 'end', upper(new.span))));
    end if;
    return null;
end $$;
create trigger slot_claims_audit after update on slot_claims for each row execute function slot_claims_audit();

-- The change log (issue 12): `audit_log` becomes the one append-only table behind the history of
-- holds and bookings, the change feed, the live streams and the webhooks. Every state change
-- writes its rows here from triggers, in the same transaction as the change: a rolled-back
-- transaction leaves none, a committed one always has them, whichever code (or person) wrote.
--
-- Each row is one change event: a stable `uid` for consumers to de-duplicate, a `type`
-- (`hold.created`, `seats.changed`, ...), its subject (`subject_kind`, `subject_id`) and the
-- event, inventory or resource it belongs to, who acted and in which request, and `data`, the
-- subject's new state (with its row version: the newer version wins).
--
-- The feed's order is (`txid`, `id`): `txid` is the writing transaction's id. A reader only ever
-- reads rows whose transaction is older than the oldest transaction still running
-- (`pg_snapshot_xmin`), so no row can later appear behind a position a reader has passed.
--
-- History rows (`hold_id` set) are kept for ever, as before. The others (availability, created
-- events, inventories and resources) are purged after OUTBOX_RETENTION_HOURS; the feed serves
-- only what comes after `change_log_horizon`, the last position purged.

alter table audit_log
    add column uid uuid not null default gen_random_uuid(),
    add column txid xid8 not null default pg_current_xact_id(),
    add column type text,
    add column subject_kind text,
    add column subject_id uuid,
    add column event_id uuid,
    add column inventory_id uuid,
    add column resource_id uuid,
    add column data jsonb,
    alter column hold_id drop not null,
    alter column entity drop not null,
    alter column to_status drop not null;

-- The history written before this migration, in the new terms (the one update ever allowed).
drop trigger audit_log_append_only on audit_log;
update audit_log a set
    type = a.entity || '.' || case
        when a.from_status is null then case a.entity when 'hold' then 'created' else 'confirmed' end
        when a.detail ? 'rescheduled_to' then 'rescheduled'
        when a.from_status = a.to_status then 'extended'
        else lower(a.to_status) end,
    subject_kind = a.entity,
    subject_id = coalesce(a.booking_id, a.hold_id),
    event_id = h.event_id, inventory_id = h.inventory_id, resource_id = h.resource_id,
    data = coalesce(a.detail, '{}') || jsonb_build_object('status', a.to_status)
  from holds h
 where h.id = a.hold_id;

alter table audit_log
    alter column type set not null,
    alter column subject_kind set not null,
    add constraint audit_log_history_complete
        check (hold_id is null or (entity is not null and to_status is not null)),
    drop constraint audit_log_pkey,
    add constraint audit_log_pkey primary key (txid, id);
drop index audit_log_hold_idx;
create index audit_log_hold_idx on audit_log (hold_id, id) where hold_id is not null;

-- The last feed position purged: a cursor at or before it is expired.
create table change_log_horizon (
    only_row  boolean primary key default true constraint change_log_horizon_one_row check (only_row),
    txid      xid8 not null,
    id        bigint not null
);
insert into change_log_horizon (txid, id) values ('0', 0);

-- History rows can never change or go; the others may only be purged.
create trigger audit_log_append_only before update or truncate on audit_log
    for each statement execute function audit_append();
create function audit_keep_history() returns trigger language plpgsql as $$
begin
    raise exception 'audit_log history rows are never deleted' using errcode = 'P0001';
end $$;
create trigger audit_log_keep_history before delete on audit_log for each row
    when (old.hold_id is not null) execute function audit_keep_history();

-- Who acts: the transaction-local settings the service sets with each BEGIN, or `system`.
create function change_actor_role() returns text language sql stable as $$
    select coalesce(nullif(current_setting('holdfast.actor_role', true), ''), 'system')
$$;
create function change_actor() returns text language sql stable as $$
    select case when change_actor_role() = 'system' then 'system'
                else coalesce(nullif(current_setting('holdfast.actor', true), ''), 'system') end
$$;
create function change_request_id() returns text language sql stable as $$
    select nullif(current_setting('holdfast.request_id', true), '')
$$;

create or replace function holds_audit() returns trigger language plpgsql as $$
declare
    v_role text := coalesce(nullif(current_setting('holdfast.actor_role', true), ''), 'system');
    v_from text;
    v_type text;
    v_detail jsonb;
begin
    if tg_op = 'INSERT' then
        v_type := 'hold.created';
        v_detail := jsonb_build_object('expires_at', new.expires_at);
    elsif new.status is distinct from old.status then
        v_from := old.status;
        v_type := 'hold.' || lower(new.status);
    else
        v_from := old.status;
        v_type := 'hold.extended';
        v_detail := jsonb_build_object('expires_at', new.expires_at, 'previous_expires_at', old.expires_at);
    end if;
    -- Expiry is the clock's doing, even when a request's transaction carries it out.
    if new.status = 'EXPIRED' then
        v_role := 'system';
    end if;
    insert into audit_log (hold_id, booking_id, entity, from_status, to_status, detail, actor, actor_role, request_id,
                           type, subject_kind, subject_id, event_id, inventory_id, resource_id, data)
    values (new.id, null, 'hold', v_from, new.status, v_detail,
            case when v_role = 'system' then 'system'
                 else coalesce(nullif(current_setting('holdfast.actor', true), ''), 'system') end,
            v_role, nullif(current_setting('holdfast.request_id', true), ''),
            v_type, 'hold', new.id, new.event_id, new.inventory_id, new.resource_id,
            jsonb_build_object('status', new.status, 'user_id', new.user_id, 'expires_at', new.expires_at,
                               'version', new.version)
              || case when v_type = 'hold.extended' then jsonb_build_object('previous_expires_at', old.expires_at)
                      else '{}' end);
    return null;
end $$;

create or replace function bookings_audit() returns trigger language plpgsql as $$
declare
    v_role text := coalesce(nullif(current_setting('holdfast.actor_role', true), ''), 'system');
begin
    insert into audit_log (hold_id, booking_id, entity, from_status, to_status, detail, actor, actor_role, request_id,
                           type, subject_kind, subject_id, event_id, inventory_id, resource_id, data)
    values (new.hold_id, new.id, 'booking', case when tg_op = 'UPDATE' then old.status end, new.status, null,
            case when v_role = 'system' then 'system'
                 else coalesce(nullif(current_setting('holdfast.actor', true), ''), 'system') end,
            v_role, nullif(current_setting('holdfast.request_id', true), ''),
            case when tg_op = 'INSERT' then 'booking.confirmed' else 'booking.' || lower(new.status) end,
            'booking', new.id, new.event_id, new.inventory_id, new.resource_id,
            jsonb_build_object('status', new.status, 'hold_id', new.hold_id, 'user_id', new.user_id,
                               'total_cents', new.total_cents, 'payment_reference', new.payment_reference,
                               'cancelled_at', new.cancelled_at, 'version', new.version));
    return null;
end $$;

-- A rescheduled slot is a change of the booking (or of the hold, before it is confirmed).
create or replace function slot_claims_audit() returns trigger language plpgsql as $$
declare
    v_booking bookings%rowtype;
    v_kind text;
begin
    if new.span is distinct from old.span then
        select * into v_booking from bookings where hold_id = new.hold_id;
        v_kind := case when v_booking.id is null then 'hold' else 'booking' end;
        insert into audit_log (hold_id, booking_id, entity, from_status, to_status, detail, actor, actor_role,
                               request_id, type, subject_kind, subject_id, resource_id, data)
        values (new.hold_id, v_booking.id, v_kind,
                coalesce(v_booking.status, 'HELD'), coalesce(v_booking.status, 'HELD'),
                jsonb_build_object('rescheduled_from', jsonb_build_object('start', lower(old.span), 'end', upper(old.span)),
                                   'rescheduled_to', jsonb_build_object('start', lower(new.span), 'end', upper(new.span))),
                change_actor(), change_actor_role(), change_request_id(),
                v_kind || '.rescheduled', v_kind, coalesce(v_booking.id, new.hold_id), new.resource_id,
                jsonb_build_object('status', coalesce(v_booking.status, 'HELD'),
                                   'start', lower(new.span), 'end', upper(new.span),
                                   'previous', jsonb_build_object('start', lower(old.span), 'end', upper(old.span))));
    end if;
    return null;
end $$;

-- Seats whose claim changed (held, freed, sold), one event per statement and seat map. Public:
-- seat ids, statuses and versions, nothing about who. A hold's expiry moving is not a change of
-- status; a hold that ran out is announced when it is swept (within HOLD_SWEEP_INTERVAL_MS).
create function seats_changed() returns trigger language plpgsql as $$
begin
    insert into audit_log (type, subject_kind, subject_id, event_id, data, actor, actor_role, request_id)
    select 'seats.changed', 'event', n.event_id, n.event_id,
           jsonb_build_object('seats', jsonb_agg(jsonb_build_object(
               'id', n.id,
               'status', case when n.booking_id is not null then 'BOOKED'
                              when n.hold_id is not null and n.hold_expires_at > now() then 'HELD'
                              else 'AVAILABLE' end,
               'version', n.version) order by n.id)),
           change_actor(), change_actor_role(), change_request_id()
      from new_rows n join old_rows o on o.id = n.id
     where n.hold_id is distinct from o.hold_id or n.booking_id is distinct from o.booking_id
     group by n.event_id;
    return null;
end $$;
create trigger seats_changed after update on seats
    referencing old table as old_rows new table as new_rows
    for each statement execute function seats_changed();

-- Nights whose counts or settings changed, one event per statement and inventory:
-- `nights.changed` when holds and bookings moved the counts, `inventory.nights_changed` when an
-- admin added nights or changed their capacity, allowance or stop-sell.
create function nights_json(n inventory_nights) returns jsonb language sql immutable as $$
    select jsonb_build_object('night', n.night, 'capacity', n.capacity,
                              'overbooking_allowance', n.overbooking_allowance, 'closed', n.closed,
                              'held', n.held, 'booked', n.booked,
                              'available', case when n.closed then 0
                                                else greatest(n.capacity + n.overbooking_allowance - n.held - n.booked, 0) end,
                              'version', n.version)
$$;
create function nights_changed() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        insert into audit_log (type, subject_kind, subject_id, inventory_id, data, actor, actor_role, request_id)
        select 'inventory.nights_changed', 'inventory', n.inventory_id, n.inventory_id,
               jsonb_build_object('nights', jsonb_agg(nights_json(n) order by n.night)),
               change_actor(), change_actor_role(), change_request_id()
          from new_rows n
         group by n.inventory_id;
    else
        insert into audit_log (type, subject_kind, subject_id, inventory_id, data, actor, actor_role, request_id)
        select case when bool_or((n.capacity, n.overbooking_allowance, n.closed)
                                 is distinct from (o.capacity, o.overbooking_allowance, o.closed))
                    then 'inventory.nights_changed' else 'nights.changed' end,
               'inventory', n.inventory_id, n.inventory_id,
               jsonb_build_object('nights', jsonb_agg(nights_json(n) order by n.night)),
               change_actor(), change_actor_role(), change_request_id()
          from new_rows n join old_rows o on o.inventory_id = n.inventory_id and o.night = n.night
         where (n.capacity, n.overbooking_allowance, n.closed, n.held, n.booked)
               is distinct from (o.capacity, o.overbooking_allowance, o.closed, o.held, o.booked)
         group by n.inventory_id;
    end if;
    return null;
end $$;
create trigger nights_changed_insert after insert on inventory_nights
    referencing new table as new_rows
    for each statement execute function nights_changed();
create trigger nights_changed_update after update on inventory_nights
    referencing old table as old_rows new table as new_rows
    for each statement execute function nights_changed();

-- Slot intervals taken or freed on a resource, one event per statement and resource.
create function slots_changed() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        insert into audit_log (type, subject_kind, subject_id, resource_id, data, actor, actor_role, request_id)
        select 'slots.changed', 'resource', n.resource_id, n.resource_id,
               jsonb_build_object('taken', jsonb_agg(jsonb_build_object('start', lower(n.span), 'end', upper(n.span))
                                                     order by lower(n.span)),
                                  'freed', '[]'::jsonb),
               change_actor(), change_actor_role(), change_request_id()
          from new_rows n
         where n.active
         group by n.resource_id;
    else
        insert into audit_log (type, subject_kind, subject_id, resource_id, data, actor, actor_role, request_id)
        select 'slots.changed', 'resource', c.resource_id, c.resource_id,
               jsonb_build_object(
                   'taken', coalesce(jsonb_agg(jsonb_build_object('start', lower(c.new_span), 'end', upper(c.new_span))
                                               order by lower(c.new_span)) filter (where c.new_active), '[]'),
                   'freed', coalesce(jsonb_agg(jsonb_build_object('start', lower(c.old_span), 'end', upper(c.old_span))
                                               order by lower(c.old_span)) filter (where c.old_active), '[]')),
               change_actor(), change_actor_role(), change_request_id()
          from (select n.resource_id, n.span as new_span, o.span as old_span, n.active as new_active, o.active as old_active
                  from new_rows n join old_rows o on o.hold_id = n.hold_id
                 where (n.span, n.active) is distinct from (o.span, o.active)) c
         group by c.resource_id;
    end if;
    return null;
end $$;
create trigger slots_changed_insert after insert on slot_claims
    referencing new table as new_rows
    for each statement execute function slots_changed();
create trigger slots_changed_update after update on slot_claims
    referencing old table as old_rows new table as new_rows
    for each statement execute function slots_changed();

-- Events, inventories and resources being created.
create function catalogue_created() returns trigger language plpgsql as $$
declare
    v_kind text := case tg_table_name when 'events' then 'event' when 'inventories' then 'inventory' else 'resource' end;
begin
    insert into audit_log (type, subject_kind, subject_id, event_id, inventory_id, resource_id, data,
                           actor, actor_role, request_id)
    values (v_kind || '.created', v_kind, new.id,
            case when v_kind = 'event' then new.id end,
            case when v_kind = 'inventory' then new.id end,
            case when v_kind = 'resource' then new.id end,
            to_jsonb(new) - 'created_by' - 'id',
            change_actor(), change_actor_role(), change_request_id());
    return null;
end $$;
create trigger events_created after insert on events for each row execute function catalogue_created();
create trigger inventories_created after insert on inventories for each row execute function catalogue_created();
create trigger resources_created after insert on resources for each row execute function catalogue_created();

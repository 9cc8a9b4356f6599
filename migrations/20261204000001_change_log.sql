-- The change log (issue 12): `audit_log` becomes the one append-only table behind the history of
-- holds and bookings, the change feed, the live streams and the webhooks. Every state change
-- writes its row here from a trigger, in the same transaction as the change: a rolled-back
-- transaction leaves none, a committed one always has it, whichever code (or person) wrote.
--
-- Lean on the write path: a history row (a hold's or booking's change, `hold_id` set) gains only
-- `txid`; its type, subject and data are derived when read (the view `change_log`), from the
-- row and from the hold and booking it names, whose owner, target and price never change. The
-- other rows (availability: seats, nights, slots; created events, inventories, resources) carry
-- their `type`, the `scope_id` they belong to and their `data`.
--
-- The feed's order is (`txid`, `id`): `txid` is the writing transaction's id. A reader only ever
-- reads rows whose transaction is older than the oldest transaction still running
-- (`pg_snapshot_xmin`), so no row can later appear behind a position a reader has passed.
--
-- History rows are kept for ever, as before. The others are purged after OUTBOX_RETENTION_HOURS;
-- the feed serves only what comes after `change_log_horizon`, the last position purged.

alter table audit_log
    add column txid xid8 not null default pg_current_xact_id(),
    add column type text,
    add column scope_id uuid,
    add column data jsonb,
    alter column hold_id drop not null,
    alter column entity drop not null,
    alter column to_status drop not null,
    add constraint audit_log_row_kind check (
        case when hold_id is null then type is not null and scope_id is not null
             else type is null and entity is not null and to_status is not null end),
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
drop trigger audit_log_append_only on audit_log;
create trigger audit_log_append_only before update or truncate on audit_log
    for each statement execute function audit_append();
create function audit_keep_history() returns trigger language plpgsql as $$
begin
    raise exception 'audit_log history rows are never deleted' using errcode = 'P0001';
end $$;
create trigger audit_log_keep_history before delete on audit_log for each row
    when (old.hold_id is not null) execute function audit_keep_history();

-- A row's data as readers see it: seats.changed is stored compactly (see `seats_changed`).
create function change_data(p_type text, p_data jsonb) returns jsonb language sql immutable as $$
    select case when p_type = 'seats.changed' and jsonb_typeof(p_data) = 'array' then
                    jsonb_build_object('seats', coalesce((
                        select jsonb_agg(jsonb_build_object('id', e -> 0, 'status', e -> 1, 'version', e -> 2)
                                         order by ord)
                          from jsonb_array_elements(p_data) with ordinality as x(e, ord)), '[]'))
                else p_data end
$$;

-- Every row as a change event: type, subject, owning event / inventory / resource, data.
create view change_log as
select a.id, a.txid, a.at, a.actor, a.actor_role, a.request_id,
       coalesce(a.type, a.entity || '.' || case
           when a.from_status is null then case a.entity when 'hold' then 'created' else 'confirmed' end
           when a.detail ? 'rescheduled_to' then 'rescheduled'
           when a.from_status = a.to_status then 'extended'
           else lower(a.to_status) end) as type,
       case when a.hold_id is not null then a.entity
            when a.type in ('seats.changed', 'event.created') then 'event'
            when a.type in ('nights.changed', 'inventory.nights_changed', 'inventory.created') then 'inventory'
            else 'resource' end as subject_kind,
       case when a.hold_id is null then a.scope_id
            when a.entity = 'booking' then a.booking_id
            else a.hold_id end as subject_id,
       case when a.hold_id is not null then h.event_id
            when a.type in ('seats.changed', 'event.created') then a.scope_id end as event_id,
       case when a.hold_id is not null then h.inventory_id
            when a.type in ('nights.changed', 'inventory.nights_changed', 'inventory.created') then a.scope_id end
           as inventory_id,
       case when a.hold_id is not null then h.resource_id
            when a.type in ('slots.changed', 'resource.created') then a.scope_id end as resource_id,
       case when a.hold_id is null then change_data(a.type, a.data)
            when a.entity = 'hold' then jsonb_build_object('status', a.to_status, 'user_id', h.user_id)
                                        || coalesce(a.detail, '{}')
            else jsonb_build_object('status', a.to_status, 'hold_id', a.hold_id, 'user_id', b.user_id,
                                    'total_cents', b.total_cents, 'payment_reference', b.payment_reference)
                 || coalesce(a.detail, '{}') end as data
  from audit_log a
  left join holds h on h.id = a.hold_id
  left join bookings b on b.id = a.booking_id;

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

-- Seats whose claim changed (held, freed, sold), one event per statement and seat map. Public:
-- seat ids, statuses and versions, nothing about who. A hold's expiry moving is not a change of
-- status; a hold that ran out is announced when it is swept (within HOLD_SWEEP_INTERVAL_MS).
-- This row is written with every hold and confirm, so it is stored compactly: `[[id, status,
-- version], ...]`, which `change_data` expands for readers, and without the request id (the
-- hold's or booking's row of the same transaction carries it).
create function seats_changed() returns trigger language plpgsql as $$
begin
    insert into audit_log (type, scope_id, data, actor, actor_role)
    select 'seats.changed', n.event_id,
           jsonb_agg(jsonb_build_array(
               n.id,
               case when n.booking_id is not null then 'BOOKED'
                    when n.hold_id is not null and n.hold_expires_at > now() then 'HELD'
                    else 'AVAILABLE' end,
               n.version) order by n.id),
           change_actor(), change_actor_role()
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
        insert into audit_log (type, scope_id, data, actor, actor_role, request_id)
        select 'inventory.nights_changed', n.inventory_id,
               jsonb_build_object('nights', jsonb_agg(nights_json(n) order by n.night)),
               change_actor(), change_actor_role(), change_request_id()
          from new_rows n
         group by n.inventory_id;
    else
        insert into audit_log (type, scope_id, data, actor, actor_role, request_id)
        select case when bool_or((n.capacity, n.overbooking_allowance, n.closed)
                                 is distinct from (o.capacity, o.overbooking_allowance, o.closed))
                    then 'inventory.nights_changed' else 'nights.changed' end,
               n.inventory_id,
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
        insert into audit_log (type, scope_id, data, actor, actor_role, request_id)
        select 'slots.changed', n.resource_id,
               jsonb_build_object('taken', jsonb_agg(jsonb_build_object('start', lower(n.span), 'end', upper(n.span))
                                                     order by lower(n.span)),
                                  'freed', '[]'::jsonb),
               change_actor(), change_actor_role(), change_request_id()
          from new_rows n
         where n.active
         group by n.resource_id;
    else
        insert into audit_log (type, scope_id, data, actor, actor_role, request_id)
        select 'slots.changed', c.resource_id,
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
    insert into audit_log (type, scope_id, data, actor, actor_role, request_id)
    values (v_kind || '.created', new.id, to_jsonb(new) - 'created_by' - 'id',
            change_actor(), change_actor_role(), change_request_id());
    return null;
end $$;
create trigger events_created after insert on events for each row execute function catalogue_created();
create trigger inventories_created after insert on inventories for each row execute function catalogue_created();
create trigger resources_created after insert on resources for each row execute function catalogue_created();

-- On-sale settings (issue 13): when an event goes on sale, and how many seats one buyer may hold
-- or own in it. Both are read by the statements that claim seats, from the event's row that
-- those statements read already.
alter table events
    add column on_sale_at timestamptz,
    add column max_seats_per_buyer integer
        constraint events_max_seats_per_buyer_range check (max_seats_per_buyer between 1 and 1000);

-- A change of the settings is a change event too (`event.updated`).
create function event_updated() returns trigger language plpgsql as $$
begin
    insert into audit_log (type, scope_id, data, actor, actor_role, request_id)
    values ('event.updated', new.id, to_jsonb(new) - 'created_by' - 'id',
            change_actor(), change_actor_role(), change_request_id());
    return null;
end $$;
create trigger events_updated after update on events for each row
    when ((new.on_sale_at, new.max_seats_per_buyer) is distinct from (old.on_sale_at, old.max_seats_per_buyer))
    execute function event_updated();

-- The view of 20261204000001_change_log, with `event.updated` about its event.
create or replace view change_log as
select a.id, a.txid, a.at, a.actor, a.actor_role, a.request_id,
       coalesce(a.type, a.entity || '.' || case
           when a.from_status is null then case a.entity when 'hold' then 'created' else 'confirmed' end
           when a.detail ? 'rescheduled_to' then 'rescheduled'
           when a.from_status = a.to_status then 'extended'
           else lower(a.to_status) end) as type,
       case when a.hold_id is not null then a.entity
            when a.type in ('seats.changed', 'event.created', 'event.updated') then 'event'
            when a.type in ('nights.changed', 'inventory.nights_changed', 'inventory.created') then 'inventory'
            else 'resource' end as subject_kind,
       case when a.hold_id is null then a.scope_id
            when a.entity = 'booking' then a.booking_id
            else a.hold_id end as subject_id,
       case when a.hold_id is not null then h.event_id
            when a.type in ('seats.changed', 'event.created', 'event.updated') then a.scope_id end as event_id,
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

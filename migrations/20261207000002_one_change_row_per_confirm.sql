-- One change row per confirm (issue 10): the statement that confirms a hold writes one
-- `audit_log` row, the booking's, which also carries the hold's own change (`hold.confirmed`), and
-- for seats and rooms the availability sold (`seats.changed`, `nights.changed`). Until now it
-- wrote the hold's row and the booking's: two rows for three events (two for a slot confirm). A
-- row's insert is most of what a change costs Postgres (its heap tuple, the primary key's entry
-- and `audit_log_hold_idx`'s, the WAL for all three); see BENCHMARKS.md, sessions 14 and 21.
--
-- A row says it carries the hold's change in `hold_from_status`: the hold's status before the
-- change (`HELD`); the hold's status after it is the row's `to_status`, the booking's too. Only a
-- booking's row carries it, and only the confirm's statement writes it; the triggers do not.
--
-- Feed positions stay `(txid, id)` and every event keeps its own, from the row's id down: a row's
-- last part (its availability, else its history) is at `id`, the one before at `id - 1`, the
-- hold's part, first of all, at `id - 2` in a row of three events. Row ids now step by 3, so the
-- two ids below a row's are never another row's. Cursors, event ids, webhook deliveries and the
-- public streams (which see only the availability part, at the row's own id) mean what they meant.
--
-- Rolling upgrade: the previous release reads the feed through this view, and the public streams
-- from the rows' type and scope, so it reads these rows whole. Its booking history
-- (`GET /v1/bookings/{id}/history`) reads `audit_log` itself and would list such a confirm as the
-- booking's entry alone, without the hold's, until every instance runs this release.

alter table audit_log alter column id set increment by 3;

-- A column without a default (no rewrite) and a check that does not scan the log, which keeps
-- history for ever, under this migration's lock: every row it has holds null there.
alter table audit_log add column hold_from_status text;
alter table audit_log add constraint audit_log_hold_part check (
    hold_from_status is null or (entity = 'booking' and hold_id is not null and booking_id is not null)) not valid;

-- Every change event, as before (migration `one_change_row_per_hold`), a row read as up to three
-- parts: the hold's change (if the row carries one), the history of the row's hold or booking,
-- the availability. Each part's position is counted down from the row's id (see above).
drop view change_log;
create view change_log as
select p.id, a.txid, a.id as row_id, a.at, a.actor, a.actor_role, a.request_id,
       case when not p.history then a.type
            else p.entity || '.' || case
                when p.from_status is null then case p.entity when 'hold' then 'created' else 'confirmed' end
                when p.detail ? 'rescheduled_to' then 'rescheduled'
                when p.from_status = a.to_status then 'extended'
                else lower(a.to_status) end end as type,
       case when p.history then p.entity
            when a.type in ('seats.changed', 'event.created', 'event.updated') then 'event'
            when a.type in ('nights.changed', 'inventory.nights_changed', 'inventory.created') then 'inventory'
            else 'resource' end as subject_kind,
       case when not p.history then a.scope_id
            when p.entity = 'booking' then a.booking_id
            else a.hold_id end as subject_id,
       case when p.history then h.event_id
            when a.type in ('seats.changed', 'event.created', 'event.updated') then a.scope_id end as event_id,
       case when p.history then h.inventory_id
            when a.type in ('nights.changed', 'inventory.nights_changed', 'inventory.created') then a.scope_id end
           as inventory_id,
       case when p.history then h.resource_id
            when a.type in ('slots.changed', 'resource.created') then a.scope_id end as resource_id,
       case when not p.history then change_data(a.type, a.data)
            when p.entity = 'hold' then jsonb_build_object('status', a.to_status, 'user_id', h.user_id)
                                        || coalesce(p.detail, '{}')
            else jsonb_build_object('status', a.to_status, 'hold_id', a.hold_id, 'user_id', b.user_id,
                                    'total_cents', b.total_cents, 'payment_reference', b.payment_reference)
                 || coalesce(p.detail, '{}') end as data
  from audit_log a
  cross join lateral (select a.id - 1 - (a.type is not null)::int as id, true as history, 'hold' as entity,
                             a.hold_from_status as from_status, null::jsonb as detail
                       where a.hold_from_status is not null
                      union all
                      select a.id - (a.type is not null)::int, true, a.entity, a.from_status, a.detail
                       where a.hold_id is not null
                      union all
                      select a.id, false, null, null, null
                       where a.type is not null) p
  left join holds h on h.id = a.hold_id
  left join bookings b on b.id = a.booking_id;

-- One change row fewer per seat hold and per confirm (issues 10 and 12): the statement that
-- creates a seat hold writes one `audit_log` row that carries both the hold's history
-- (`hold.created`) and its seats' availability (`seats.changed`), instead of two rows from two
-- triggers; the statement that confirms one writes the hold's row (`hold.confirmed`) and the
-- booking's, which carries the seats sold (`booking.confirmed`, `seats.changed`): two rows, not
-- three. A row's insert is what a change costs Postgres (its heap tuple, three index entries,
-- WAL): measured in pgbench, one row instead of two took 0.86 of a hold's Postgres CPU (see
-- BENCHMARKS.md, session 14). Events come in the order the triggers wrote them.
--
-- Feed positions stay `(txid, id)` and every event keeps its own: the row ids now step by 2, so
-- the id just below a row's is never another row's, and a row carrying two events gives the
-- first (the history part) the position `(txid, id - 1)` and the second (the availability part)
-- `(txid, id)`, the row's own. Cursors, event ids, webhook deliveries and the public streams
-- (which see only the availability part, at the row's position) mean what they meant.
--
-- The statement knows it logs itself; the triggers learn it from `holdfast.logged_hold`, which
-- the service sets with the BEGIN to the id of the hold the transaction creates or confirms: the
-- hold's insert and status changes, and the insert of its booking, are then not logged again,
-- and the `seats_changed` trigger
-- does not run at all (its call cost about 85 µs of Postgres time, near a tenth of a hold's,
-- measured with EXPLAIN ANALYZE). Such a transaction may change seats only through the statement
-- that logs them: any other seat claimed, freed or sold in it is refused with an error (the
-- trigger `seats_change_unlogged`), never left unannounced. Every other transaction (another
-- writer, SQL by hand) is logged by the triggers as before.

alter table audit_log alter column id set increment by 2;

alter table audit_log
    drop constraint audit_log_row_kind,
    add constraint audit_log_row_kind check (
        case when hold_id is null then type is not null and scope_id is not null
             else entity is not null and to_status is not null and (type is null) = (scope_id is null) end);

-- The hold whose changes log themselves, if any: set by the service with the BEGIN.
create function change_logged_hold() returns uuid language sql stable as $$
    select nullif(current_setting('holdfast.logged_hold', true), '')::uuid
$$;

-- A WHEN clause is evaluated as the row is inserted, before the end-of-statement triggers: the
-- hold's own statement wrote its row, so no trigger call at all.
drop trigger holds_audit_insert on holds;
create trigger holds_audit_insert after insert on holds for each row
    when (new.id is distinct from change_logged_hold())
    execute function holds_audit();
drop trigger holds_audit_update on holds;
create trigger holds_audit_update after update on holds for each row
    when ((new.status is distinct from old.status or new.expires_at is distinct from old.expires_at)
          and new.id is distinct from change_logged_hold())
    execute function holds_audit();

drop trigger bookings_audit_insert on bookings;
create trigger bookings_audit_insert after insert on bookings for each row
    when (new.hold_id is distinct from change_logged_hold())
    execute function bookings_audit();

drop trigger seats_changed on seats;
create trigger seats_changed after update on seats
    referencing old table as old_rows new table as new_rows
    for each statement when (change_logged_hold() is null) execute function seats_changed();

-- In a self-logging transaction, a seat whose claim changed other than by becoming the logged
-- hold's or being sold from it would go unannounced: refused instead.
create function seats_change_unlogged() returns trigger language plpgsql as $$
begin
    raise exception 'seat % changed outside the statement that logs hold %''s changes', new.id, change_logged_hold()
        using errcode = 'P0001';
end $$;
create trigger seats_change_unlogged after update on seats for each row
    when (change_logged_hold() is not null
          and (new.hold_id is distinct from old.hold_id or new.booking_id is distinct from old.booking_id)
          and not (new.hold_id is not distinct from change_logged_hold() and new.booking_id is null)
          and not (old.hold_id is not distinct from change_logged_hold() and old.booking_id is null
                   and new.booking_id is not null))
    execute function seats_change_unlogged();

-- Every change event (the view of 20261205000002_on_sale, each row read as one event or two): a
-- row with a history part and an availability part is two events, the
-- history first, at `id - 1` (see above). `row_id` is the row's own id, for readers to bound
-- their scan by the primary key (an event's id is its row's or one less).
drop view change_log;
create view change_log as
select p.id, a.txid, a.id as row_id, a.at, a.actor, a.actor_role, a.request_id,
       case when not p.history then a.type
            else a.entity || '.' || case
                when a.from_status is null then case a.entity when 'hold' then 'created' else 'confirmed' end
                when a.detail ? 'rescheduled_to' then 'rescheduled'
                when a.from_status = a.to_status then 'extended'
                else lower(a.to_status) end end as type,
       case when p.history then a.entity
            when a.type in ('seats.changed', 'event.created', 'event.updated') then 'event'
            when a.type in ('nights.changed', 'inventory.nights_changed', 'inventory.created') then 'inventory'
            else 'resource' end as subject_kind,
       case when not p.history then a.scope_id
            when a.entity = 'booking' then a.booking_id
            else a.hold_id end as subject_id,
       case when p.history then h.event_id
            when a.type in ('seats.changed', 'event.created', 'event.updated') then a.scope_id end as event_id,
       case when p.history then h.inventory_id
            when a.type in ('nights.changed', 'inventory.nights_changed', 'inventory.created') then a.scope_id end
           as inventory_id,
       case when p.history then h.resource_id
            when a.type in ('slots.changed', 'resource.created') then a.scope_id end as resource_id,
       case when not p.history then change_data(a.type, a.data)
            when a.entity = 'hold' then jsonb_build_object('status', a.to_status, 'user_id', h.user_id)
                                        || coalesce(a.detail, '{}')
            else jsonb_build_object('status', a.to_status, 'hold_id', a.hold_id, 'user_id', b.user_id,
                                    'total_cents', b.total_cents, 'payment_reference', b.payment_reference)
                 || coalesce(a.detail, '{}') end as data
  from audit_log a
  cross join lateral (select a.id - 1 as id, true as history where a.hold_id is not null and a.type is not null
                      union all
                      select a.id, a.type is null) p
  left join holds h on h.id = a.hold_id
  left join bookings b on b.id = a.booking_id;

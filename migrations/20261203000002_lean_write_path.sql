-- A lean write path (issue 10): less work per hold and confirm, every guarantee unchanged.

-- Claiming, freeing and selling a seat changes hold_id, hold_expires_at and booking_id. While
-- hold_id was indexed, each of those updates wrote a new entry into every one of the seats
-- table's indexes (five). Without that index no indexed column changes, so the update can be
-- HOT (heap-only: the new row version goes on the same page, no index is touched) whenever its
-- page has room; the fill factor leaves that room on the pages of seats inserted from now on.
-- A hold's seats are found through hold_seats (its primary key starts with hold_id).
drop index seats_hold_idx;
alter table seats set (fillfactor = 80);

-- The audit triggers, each one function call instead of two, and update triggers that run only
-- when there is something to record (a WHEN clause costs no PL/pgSQL call). Same rows as before:
-- who (transaction-local settings, or `system`), which request, from and to which status.
create or replace function holds_audit() returns trigger language plpgsql as $$
declare
    v_role text := coalesce(nullif(current_setting('holdfast.actor_role', true), ''), 'system');
    v_from text;
    v_detail jsonb;
begin
    if tg_op = 'INSERT' then
        v_detail := jsonb_build_object('expires_at', new.expires_at);
    elsif new.status is distinct from old.status then
        v_from := old.status;
    else
        v_from := old.status;
        v_detail := jsonb_build_object('expires_at', new.expires_at, 'previous_expires_at', old.expires_at);
    end if;
    -- Expiry is the clock's doing, even when a request's transaction carries it out.
    if new.status = 'EXPIRED' then
        v_role := 'system';
    end if;
    insert into audit_log (hold_id, booking_id, entity, from_status, to_status, detail, actor, actor_role, request_id)
    values (new.id, null, 'hold', v_from, new.status, v_detail,
            case when v_role = 'system' then 'system'
                 else coalesce(nullif(current_setting('holdfast.actor', true), ''), 'system') end,
            v_role, nullif(current_setting('holdfast.request_id', true), ''));
    return null;
end $$;
drop trigger holds_audit on holds;
create trigger holds_audit_insert after insert on holds for each row execute function holds_audit();
create trigger holds_audit_update after update on holds for each row
    when (new.status is distinct from old.status or new.expires_at is distinct from old.expires_at)
    execute function holds_audit();

create or replace function bookings_audit() returns trigger language plpgsql as $$
declare
    v_role text := coalesce(nullif(current_setting('holdfast.actor_role', true), ''), 'system');
begin
    insert into audit_log (hold_id, booking_id, entity, from_status, to_status, detail, actor, actor_role, request_id)
    values (new.hold_id, new.id, 'booking', case when tg_op = 'UPDATE' then old.status end, new.status, null,
            case when v_role = 'system' then 'system'
                 else coalesce(nullif(current_setting('holdfast.actor', true), ''), 'system') end,
            v_role, nullif(current_setting('holdfast.request_id', true), ''));
    return null;
end $$;
drop trigger bookings_audit on bookings;
create trigger bookings_audit_insert after insert on bookings for each row execute function bookings_audit();
create trigger bookings_audit_update after update on bookings for each row
    when (new.status is distinct from old.status)
    execute function bookings_audit();

-- Holds, bookings and slot claims keep no foreign key to their event, inventory or resource.
-- Each such key made every hold and booking take a KEY SHARE lock on its one parent row, and
-- with many requests at once Postgres records the lockers of that row in a new MultiXact each
-- time: about one MultiXact (plus a row-lock record) per request in the spread benchmark, all on
-- one hot row. What the keys guarded still holds by construction: events, inventories and
-- resources are never deleted (no route or job deletes one); a seat hold or sale takes only
-- seats of its event (seats.event_id keeps its key); a room hold's nights reference
-- inventory_nights (that key stays); a slot hold is planned from its resource's row. The
-- integrity check counts any hold, booking or slot claim whose target is unknown.
alter table holds
    drop constraint holds_event_id_fkey,
    drop constraint holds_inventory_id_fkey,
    drop constraint holds_resource_id_fkey;
alter table bookings
    drop constraint bookings_event_id_fkey,
    drop constraint bookings_inventory_id_fkey,
    drop constraint bookings_resource_id_fkey;
alter table slot_claims drop constraint slot_claims_resource_id_fkey;

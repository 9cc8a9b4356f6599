-- One change row fewer per room hold, room confirm and slot hold (issue 10): what seats got in
-- the migration `one_change_row_per_hold`. The statement that creates a room hold writes one
-- `audit_log` row carrying both the hold's history (`hold.created`) and its nights' counts
-- (`nights.changed`); the statement that confirms one writes the hold's row (`hold.confirmed`)
-- and the booking's, which carries the nights sold (`booking.confirmed`, `nights.changed`); the
-- statement that creates a slot hold writes one row carrying `hold.created` and the slot taken
-- (`slots.changed`). Until now the `nights_changed` and `slots_changed` triggers wrote each of
-- those availability rows on its own: a second row per room or slot hold and a third per room
-- confirm, each a call of a PL/pgSQL function that reads transition tables. (A slot confirm
-- changes no slot: it wrote two rows and still does.)
--
-- The statement knows it logs the availability; the triggers learn it from
-- `holdfast.logged_scope`, which the service sets with the BEGIN to the id of the inventory or
-- resource whose availability the transaction's one self-logging statement writes, always
-- together with `holdfast.logged_hold` (the hold that statement creates or confirms). It is a
-- setting of its own, not `holdfast.logged_hold`: the previous release already names its room
-- confirms' hold there while its statement leaves the nights to the trigger, so skipping the
-- trigger on that setting would leave a previous-release confirm's nights unannounced during a
-- rolling upgrade (`tests/api/upgrade.rs` replays it).
--
-- Such a transaction may change availability only through that statement, else it is refused
-- with an error, never left unannounced:
-- * nights (`nights_change_unlogged`): only as a hold takes them (`held` up, nothing else) or a
--   confirm sells them (`held` down and `booked` up by as much), on the named inventory, with
--   capacity, allowance and stop-sell unchanged. Nights rows carry no hold id, so this guard
--   checks the change's shape, not whose it is. A room hold that must first expire stale holds
--   on its nights clears the setting (one more round trip, only then), so that the trigger
--   announces the expiry and the hold's nights as before.
-- * slot claims (`slot_claim_unlogged`): a new claim only for the logged hold, on the named
--   resource, active. Claims that change (an expiry gives a slot back, a reschedule moves it)
--   are still announced by `slots_changed_update`, which this setting does not skip, so a slot
--   hold that expires dead overlapping holds first needs nothing more.
-- Every other transaction is logged by the triggers as before.

-- The inventory or resource whose availability the transaction's self-logging statement
-- writes, if any: for those statements, as `change_logged_hold()` is for the hold. (The triggers'
-- WHEN conditions read the setting inline, as in the migration `lean_trigger_conditions_and_keys`.)
create function change_logged_scope() returns uuid language sql stable as $$
    select nullif(current_setting('holdfast.logged_scope', true), '')::uuid
$$;

drop trigger nights_changed_update on inventory_nights;
create trigger nights_changed_update after update on inventory_nights
    referencing old table as old_rows new table as new_rows
    for each statement when (nullif(current_setting('holdfast.logged_scope', true), '') is null)
    execute function nights_changed();

create function availability_change_unlogged() returns trigger language plpgsql as $$
begin
    raise exception '% row % changed outside the statement that logs the availability of %',
        tg_table_name, to_jsonb(new), current_setting('holdfast.logged_scope', true)
        using errcode = 'P0001';
end $$;

create trigger nights_change_unlogged after update on inventory_nights for each row
    when (nullif(current_setting('holdfast.logged_scope', true), '') is not null
          and (new.capacity, new.overbooking_allowance, new.closed, new.held, new.booked)
              is distinct from (old.capacity, old.overbooking_allowance, old.closed, old.held, old.booked)
          and not (new.inventory_id = nullif(current_setting('holdfast.logged_scope', true), '')::uuid
                   and (new.capacity, new.overbooking_allowance, new.closed)
                       = (old.capacity, old.overbooking_allowance, old.closed)
                   and ((new.booked = old.booked and new.held > old.held)
                        or (new.booked > old.booked and new.held - old.held = old.booked - new.booked))))
    execute function availability_change_unlogged();

drop trigger slots_changed_insert on slot_claims;
create trigger slots_changed_insert after insert on slot_claims
    referencing new table as new_rows
    for each statement when (nullif(current_setting('holdfast.logged_scope', true), '') is null)
    execute function slots_changed();

create trigger slot_claim_unlogged after insert on slot_claims for each row
    when (nullif(current_setting('holdfast.logged_scope', true), '') is not null
          and not (new.active
                   and new.resource_id = nullif(current_setting('holdfast.logged_scope', true), '')::uuid
                   and new.hold_id is not distinct from nullif(current_setting('holdfast.logged_hold', true), '')::uuid))
    execute function availability_change_unlogged();

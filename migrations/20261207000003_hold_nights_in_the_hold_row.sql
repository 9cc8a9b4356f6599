-- A lean write path (issue 10): a room hold keeps its stay and its units in its own row
-- (`holds.stay`, `holds.quantity`) instead of one `hold_nights` row per night. What seats got in
-- the migration `hold_seats_in_the_hold_row`.
--
-- A room hold held the same `quantity` on every night of its stay, one row each, and nothing ever
-- changes those rows: a heap tuple and two index entries per night, each with its WAL record.
-- Measured during `rooms` (1-3 nights a hold, BENCHMARKS.md, session 22): `hold_nights` and its
-- two indexes were 269 bytes of WAL a request, about 540 a room hold, of 2,674 a request. The hold
-- row is written anyway; the two columns add about 20 bytes to it.
--
-- Rolling upgrades: migrations run at start-up (README), so instances of the previous release
-- keep serving beside this schema until they are replaced. They read a hold's nights from
-- `hold_nights` and write them there. So `hold_nights` becomes a view of both stores: the rows
-- written before this release (kept in `hold_nights_before`), and each hold's stay, one row a
-- night. An insert into the view (a previous release's room hold) lands in `hold_nights_before`,
-- so its reads find it. This release reads through the view too; a later release may fold the old
-- rows into the holds and drop the table.
--
-- `stay` and `quantity` are null for seat and slot holds and for room holds made before this
-- release. The check is added `not valid` so that adding it does not scan `holds` under its
-- lock; every row it would scan has both null, which it accepts.

alter table holds
    add column stay daterange,
    add column quantity integer,
    add constraint holds_stay_of_a_room_hold check (
        (stay is null and quantity is null)
        or (inventory_id is not null and quantity > 0
            and not isempty(stay) and not lower_inf(stay) and not upper_inf(stay))) not valid;

alter table hold_nights rename to hold_nights_before;
alter index hold_nights_pkey rename to hold_nights_before_pkey;
alter index hold_nights_night_idx rename to hold_nights_before_night_idx;

-- A hold's nights are the inventory's nights within its stay: a hold is made only when it takes
-- every night of its stay (each on sale), and nights are never deleted. A join, not a generated
-- series, so that the planner sees one row a night and the hold's reads stay index lookups: on
-- `holds_pkey`, then on `inventory_nights_pkey` over the stay's range.
create view hold_nights as
    select hold_id, inventory_id, night, quantity from hold_nights_before
    union all
    select h.id, h.inventory_id, n.night, h.quantity
      from holds h
      join inventory_nights n
        on n.inventory_id = h.inventory_id and n.night >= lower(h.stay) and n.night < upper(h.stay)
     where h.stay is not null;

create function hold_nights_insert() returns trigger language plpgsql as $$
begin
    insert into hold_nights_before (hold_id, inventory_id, night, quantity)
    values (new.hold_id, new.inventory_id, new.night, new.quantity);
    return new;
end
$$;

create trigger hold_nights_insert instead of insert on hold_nights
    for each row execute function hold_nights_insert();

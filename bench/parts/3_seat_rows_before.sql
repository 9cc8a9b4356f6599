-- Part 3', as before session 18, after part 2: the list of seats as one `hold_seats` row per
-- seat (the table is `hold_seats_before` since the migration `hold_seats_in_the_hold_row`), for
-- comparison with part 3.
insert into hold_seats_before (hold_id, seat_id) values (:hold_id, :seat_id);

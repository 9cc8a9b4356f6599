-- Seat maps list rows in natural order: shorter labels first, then alphabetically, so row "2"
-- comes before row "10" and "Z" before "AA". The index serves the ordered, paged seat-map read.
drop index if exists seats_event_order_idx;
create index seats_map_order_idx on seats (event_id, section, length(row_label), row_label, number);

-- HOLD_MAX_LIVE_PER_USER counts a user's HELD holds inside the hold's transaction; this keeps
-- that count a short index range scan however many holds the table has.
create index holds_live_by_user_idx on holds (user_id) where status = 'HELD';

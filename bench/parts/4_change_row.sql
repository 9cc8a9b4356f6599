-- Part 4, after part 3: the hold's change row (its history and its seats' availability, for the
-- change feed).
insert into audit_log (hold_id, entity, to_status, detail, type, scope_id, data, actor, actor_role, request_id)
  values (:hold_id, 'hold', 'HELD', jsonb_build_object('expires_at', now()), 'seats.changed', :event_id,
          jsonb_build_array(jsonb_build_array(:seat_id::uuid, 'HELD', 1)), 'pgbench', 'user', '');

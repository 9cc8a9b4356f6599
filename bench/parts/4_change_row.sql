-- Part 4: + the hold's change row (its history and its seats' availability, for the change feed).
\set n random(1, :nseats)
begin;
select s.id as seat_id, s.event_id, h.id as hold_id, set_config('holdfast.logged_hold', h.id::text, true)
  from (select gen_random_uuid() as id) h, bench_seats b join seats s on s.id = b.seat_id
 where b.n = :n for update of s \gset
insert into holds (id, event_id, user_id, status, expires_at, seat_ids)
  values (:hold_id, :event_id, 'pgbench', 'HELD', now() + interval '1 second' * :ttl, array[:seat_id::uuid]);
update seats set hold_id = :hold_id, hold_expires_at = now() + interval '1 second' * :ttl, version = version + 1
 where id = :seat_id;
insert into audit_log (hold_id, entity, to_status, detail, type, scope_id, data, actor, actor_role, request_id)
  values (:hold_id, 'hold', 'HELD', jsonb_build_object('expires_at', now()), 'seats.changed', :event_id,
          jsonb_build_array(jsonb_build_array(:seat_id::uuid, 'HELD', 1)), 'pgbench', 'user', '');
commit;

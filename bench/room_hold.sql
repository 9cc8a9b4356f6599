-- pgbench: the SQL of one room hold request (1 unit, 1 to 3 nights of 30), as holdfast sends it
-- for a new key whose lock is free (no claim first): one transaction whose BEGIN says who acts,
-- which hold writes its own change row and whose nights it logs (`db::write_tx`); one statement
-- that locks the stay's nights in order and, as every one has room, inserts the hold (its stay
-- and units in its own row), adds to each night's counter and writes the hold's one change row
-- (`db::inventories::create_hold`, parameters in place); and the idempotency record, written
-- once, settled, with COMMIT.
\set d random(0, 27)
\set nights random(1, 3)
select gen_random_uuid() as hold_id \gset
begin;
select set_config('plan_cache_mode', 'force_generic_plan', true), set_config('holdfast.actor', 'pgbench', true),
       set_config('holdfast.actor_role', 'user', true), set_config('holdfast.request_id', '', true),
       set_config('holdfast.logged_hold', :hold_id, true),
       set_config('holdfast.logged_scope', '00000000-0000-7000-8000-000000000002', true);
with locked as (
    select night, capacity, overbooking_allowance, closed, held, booked from inventory_nights
     where inventory_id = '00000000-0000-7000-8000-000000000002' and night >= date '2030-01-01' + :d::int and night < date '2030-01-01' + :d::int + :nights::int
     order by night for update
), fits as (
    select count(*) = :nights and coalesce(bool_and(not closed and held + booked + 1 <= capacity + overbooking_allowance), false)
           as ok
      from locked
), hold as (
    insert into holds (id, inventory_id, user_id, status, expires_at, stay, quantity)
    select :hold_id, '00000000-0000-7000-8000-000000000002', 'pgbench', 'HELD', now() + 600 * interval '1 second',
           daterange(date '2030-01-01' + :d::int, date '2030-01-01' + :d::int + :nights::int), 1 from fits where ok
    returning expires_at, created_at
), taken as (
    update inventory_nights n set held = held + 1, version = version + 1
     where inventory_id = '00000000-0000-7000-8000-000000000002'
       and night >= date '2030-01-01' + :d::int and night < date '2030-01-01' + :d::int + :nights::int and not closed
       and held + booked + 1 <= capacity + overbooking_allowance
       and exists (select 1 from hold)
    returning n
), logged as (
    insert into audit_log (hold_id, entity, to_status, detail, type, scope_id, data, actor, actor_role, request_id)
    select :hold_id, 'hold', 'HELD', jsonb_build_object('expires_at', hold.expires_at),
           case when nights.logged then 'nights.changed' end,
           case when nights.logged then '00000000-0000-7000-8000-000000000002'::uuid end,
           case when nights.logged then
               (select jsonb_build_object('nights', jsonb_agg(nights_json(t.n) order by (t.n).night)) from taken t)
           end,
           change_actor(), change_actor_role(), change_request_id()
      from hold
     cross join (select change_logged_scope() = '00000000-0000-7000-8000-000000000002' as logged) nights
     where change_logged_hold() = :hold_id
)
select l.night, l.capacity, l.overbooking_allowance, l.closed, l.held, l.booked,
       (select count(*) from taken), hold.expires_at, hold.created_at
  from locked l left join hold on true
 order by l.night;
-- The answer as the service keeps it by default: packed, about 120 bytes (IDEMPOTENCY_PACKED_ANSWERS).
insert into idempotency_records (user_id, key, fingerprint, state, claim_token, lease_until, response_status, response_packed)
  values ('pgbench', gen_random_uuid()::text, '\x00', 'SUCCEEDED', gen_random_uuid(), now(), 201,
          '\x01'::bytea || decode(repeat('5a', 119), 'hex'));
commit;

-- pgbench: the SQL of one room hold request (1 unit, 1 to 3 nights of 30), as holdfast sends
-- it: claim the key; then one transaction: who acts (audit), lock the stay's nights in order,
-- insert the hold, add to each night's counter, record the nights, complete the key.
\set d random(0, 27)
\set nights random(1, 3)
insert into idempotency_records (user_id, key, fingerprint, state, claim_token, lease_until)
  values ('pgbench', gen_random_uuid()::text, '\x00', 'IN_PROGRESS', gen_random_uuid(), now() + 30000 * interval '1 millisecond')
  on conflict (user_id, key) do nothing
  returning key \gset
begin;
select set_config('holdfast.actor', 'pgbench', true), set_config('holdfast.actor_role', 'user', true),
       set_config('holdfast.request_id', '', true);
select night, capacity, overbooking_allowance, closed, held, booked from inventory_nights
 where inventory_id = '00000000-0000-7000-8000-000000000002'
   and night >= date '2030-01-01' + :d::int and night < date '2030-01-01' + :d::int + :nights::int
 order by night for update;
with hold as (
    insert into holds (id, inventory_id, user_id, status, expires_at)
    values (gen_random_uuid(), '00000000-0000-7000-8000-000000000002', 'pgbench', 'HELD', now() + 600 * interval '1 second')
    returning id, expires_at, created_at
), taken as (
    update inventory_nights set held = held + 1, version = version + 1
     where inventory_id = '00000000-0000-7000-8000-000000000002'
       and night >= date '2030-01-01' + :d::int and night < date '2030-01-01' + :d::int + :nights::int and not closed
       and held + booked + 1 <= capacity + overbooking_allowance
    returning night
), recorded as (
    insert into hold_nights (hold_id, inventory_id, night, quantity)
    select (select id from hold), '00000000-0000-7000-8000-000000000002', night, 1 from taken
    returning night
)
select (select count(*) from recorded), hold.expires_at, hold.created_at from hold;
update idempotency_records set state = 'SUCCEEDED', response_status = 201, response_body = '{}', updated_at = now()
 where user_id = 'pgbench' and key = :key and state = 'IN_PROGRESS';
commit;

-- pgbench: the SQL of one slot hold request (the next 30-minute slot), as holdfast sends it for
-- a new key whose lock is free (no claim first): one transaction whose BEGIN says who acts,
-- which hold writes its own change row and whose availability it logs (`db::write_tx`); the
-- overlapping claims found; one statement that inserts the hold and its claim (under the
-- exclusion constraint) and writes the hold's one change row (`db::resources::create_hold`,
-- parameters in place); and the idempotency record, written once, settled, with COMMIT. The
-- sequence lookup is the only extra statement (pgbench has no shared counter).
select nextval('bench_slot_seq') as n, gen_random_uuid() as hold_id \gset
begin;
select set_config('plan_cache_mode', 'force_generic_plan', true), set_config('holdfast.actor', 'pgbench', true),
       set_config('holdfast.actor_role', 'user', true), set_config('holdfast.request_id', '', true),
       set_config('holdfast.logged_hold', :hold_id, true),
       set_config('holdfast.logged_scope', '00000000-0000-7000-8000-000000000003', true);
select c.hold_id, lower(c.span), upper(c.span), h.status = 'CONFIRMED' or h.expires_at > now()
  from slot_claims c join holds h on h.id = c.hold_id
 where c.resource_id = '00000000-0000-7000-8000-000000000003' and c.active
   and c.blocked && tstzrange(timestamptz '2030-01-01' + :n * interval '30 minutes',
                              timestamptz '2030-01-01' + (:n + 1) * interval '30 minutes', '[)');
with hold as (
    insert into holds (id, resource_id, user_id, status, expires_at)
    values (:hold_id, '00000000-0000-7000-8000-000000000003', 'pgbench', 'HELD', now() + 600 * interval '1 second')
    returning id, expires_at, created_at
), claim as (
    insert into slot_claims (hold_id, resource_id, span, blocked)
    select id, '00000000-0000-7000-8000-000000000003',
           tstzrange(timestamptz '2030-01-01' + :n * interval '30 minutes', timestamptz '2030-01-01' + (:n + 1) * interval '30 minutes', '[)'),
           tstzrange(timestamptz '2030-01-01' + :n * interval '30 minutes', timestamptz '2030-01-01' + (:n + 1) * interval '30 minutes', '[)')
      from hold
    returning span
), logged as (
    insert into audit_log (hold_id, entity, to_status, detail, type, scope_id, data, actor, actor_role, request_id)
    select :hold_id, 'hold', 'HELD', jsonb_build_object('expires_at', hold.expires_at),
           case when slots.logged then 'slots.changed' end,
           case when slots.logged then '00000000-0000-7000-8000-000000000003'::uuid end,
           case when slots.logged then
               (select jsonb_build_object('taken', jsonb_agg(jsonb_build_object('start', lower(c.span), 'end', upper(c.span))),
                                          'freed', '[]'::jsonb)
                  from claim c)
           end,
           change_actor(), change_actor_role(), change_request_id()
      from hold
     cross join (select change_logged_scope() = '00000000-0000-7000-8000-000000000003' as logged) slots
     where change_logged_hold() = :hold_id
)
select expires_at, created_at from hold;
-- The answer as the service keeps it by default: packed, about 120 bytes (IDEMPOTENCY_PACKED_ANSWERS).
insert into idempotency_records (user_id, key, fingerprint, state, claim_token, lease_until, response_status, response_packed)
  values ('pgbench', gen_random_uuid()::text, '\x00', 'SUCCEEDED', gen_random_uuid(), now(), 201,
          '\x01'::bytea || decode(repeat('5a', 119), 'hex'));
commit;

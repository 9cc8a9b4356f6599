-- pgbench: the SQL of one slot hold request (the next 30-minute slot), as holdfast sends it:
-- claim the key; then one transaction: who acts (audit), find overlapping claims, insert the
-- hold and its claim (under the exclusion constraint), complete the key. The sequence lookup is
-- the only extra statement (pgbench has no shared counter).
select nextval('bench_slot_seq') as n \gset
insert into idempotency_records (user_id, key, fingerprint, state, claim_token, lease_until)
  values ('pgbench', gen_random_uuid()::text, '\x00', 'IN_PROGRESS', gen_random_uuid(), now() + 30000 * interval '1 millisecond')
  on conflict (user_id, key) do nothing
  returning key \gset
begin;
select set_config('holdfast.actor', 'pgbench', true), set_config('holdfast.actor_role', 'user', true),
       set_config('holdfast.request_id', '', true);
select c.hold_id, lower(c.span), upper(c.span), h.status = 'CONFIRMED' or h.expires_at > now()
  from slot_claims c join holds h on h.id = c.hold_id
 where c.resource_id = '00000000-0000-7000-8000-000000000003' and c.active
   and c.blocked && tstzrange(timestamptz '2030-01-01' + :n * interval '30 minutes',
                              timestamptz '2030-01-01' + (:n + 1) * interval '30 minutes', '[)');
with hold as (
    insert into holds (id, resource_id, user_id, status, expires_at)
    values (gen_random_uuid(), '00000000-0000-7000-8000-000000000003', 'pgbench', 'HELD', now() + 600 * interval '1 second')
    returning id, expires_at, created_at
), claim as (
    insert into slot_claims (hold_id, resource_id, span, blocked)
    select id, '00000000-0000-7000-8000-000000000003',
           tstzrange(timestamptz '2030-01-01' + :n * interval '30 minutes', timestamptz '2030-01-01' + (:n + 1) * interval '30 minutes', '[)'),
           tstzrange(timestamptz '2030-01-01' + :n * interval '30 minutes', timestamptz '2030-01-01' + (:n + 1) * interval '30 minutes', '[)')
      from hold
)
select expires_at, created_at from hold;
update idempotency_records set state = 'SUCCEEDED', response_status = 201, response_body = '{}', updated_at = now()
 where user_id = 'pgbench' and key = :key and state = 'IN_PROGRESS';
commit;

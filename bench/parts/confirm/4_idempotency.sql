-- Confirm part 4: the confirm's settled idempotency record.
-- scripts/bench-parts.sh (`... confirm`) runs each part after bench/hold.sql and every part
-- before it, then bench/parts/commit.sql, as one pgbench script; its Postgres CPU less
-- bench/hold.sql's alone, run beside it, is what the confirm costs. The booking's id is derived
-- from the hold's (pgbench makes no UUIDs of its own).
insert into idempotency_records (user_id, key, fingerprint, state, claim_token, lease_until, response_status, response_body)
  values ('pgbench', gen_random_uuid()::text, '\x00', 'SUCCEEDED', gen_random_uuid(), now(), 201,
          '{"id":"00000000-0000-0000-0000-000000000000","status":"CONFIRMED","hold_id":"00000000-0000-0000-0000-000000000000","event_id":"00000000-0000-0000-0000-000000000000","seat_ids":["00000000-0000-0000-0000-000000000000"],"total_cents":1000,"payment_reference": null,"created_at":"2026-12-06T19:00:00.000000Z"}');

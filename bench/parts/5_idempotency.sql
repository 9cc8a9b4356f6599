-- Part 5, after part 4: the idempotency record, written once, settled, with the answer to replay.
insert into idempotency_records (user_id, key, fingerprint, state, claim_token, lease_until, response_status, response_body)
  values ('pgbench', gen_random_uuid()::text, '\x00', 'SUCCEEDED', gen_random_uuid(), now(), 201,
          '{"id":"00000000-0000-0000-0000-000000000000","status":"HELD","event_id":"00000000-0000-0000-0000-000000000000","seat_ids":["00000000-0000-0000-0000-000000000000"],"total_cents":1000,"expires_at":"2026-12-06T19:00:00.000000Z","created_at":"2026-12-06T19:00:00.000000Z"}');

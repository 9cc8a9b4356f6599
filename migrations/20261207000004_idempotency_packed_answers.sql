-- A settled record may keep its answer packed (`response_packed`: a format byte, then the
-- answer's JSON compressed by zstd against a fixed dictionary; `idempotency::packed`) instead of
-- as jsonb (`response_body`): about 120 bytes where jsonb takes 300-400, in a row written with
-- every request. The service writes it only with IDEMPOTENCY_PACKED_ANSWERS, which stays off
-- until no instance of a release before this one serves: those read only `response_body`, and
-- would replay a packed record as an empty answer.
--
-- The column has no default (nothing is rewritten), and the check that a settled record has an
-- answer now accepts either column. It is added `not valid`: nothing is scanned under the lock,
-- and every existing row keeps its answer in `response_body`, which satisfies it anyway.
alter table idempotency_records
    add column response_packed bytea,
    drop constraint idempotency_succeeded_has_response,
    add constraint idempotency_succeeded_has_response check (
        state <> 'SUCCEEDED'
        or (response_status is not null and (response_body is not null or response_packed is not null))
    ) not valid;

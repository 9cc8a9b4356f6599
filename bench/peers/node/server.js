// A Node/Express peer for scripts/bench-peers.sh (issue 10): the shape issue 10 compared
// holdfast against. A hold and a confirm are one Postgres transaction each, serialised by
// SELECT ... FOR UPDATE on the rows they change. No idempotency, no Redis, no authentication.
// It answers the part of holdfast's API the load generator's `spread` scenario uses:
//   POST /v1/events (layout), GET /v1/events/:id/seats, POST /v1/events/:id/holds,
//   POST /v1/holds/:id/confirm, GET /ready.
// Settings: DATABASE_URL, LISTEN_ADDR (host:port), DATABASE_MAX_CONNECTIONS (default 20).
'use strict';
const express = require('express');
const { Pool } = require('pg');

const pool = new Pool({
  connectionString: process.env.DATABASE_URL,
  max: Number(process.env.DATABASE_MAX_CONNECTIONS || 20),
});
const HOLD_SECONDS = 600;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const SCHEMA = `
create table if not exists peer_events (
  id uuid primary key default gen_random_uuid(), name text not null, starts_at timestamptz not null);
create table if not exists peer_seats (
  id uuid primary key default gen_random_uuid(), event_id uuid not null references peer_events,
  section text not null, row_number int not null, seat_number int not null,
  status text not null default 'available', hold_id uuid, held_until timestamptz);
create index if not exists peer_seats_event on peer_seats (event_id, id);
create table if not exists peer_holds (
  id uuid primary key default gen_random_uuid(), event_id uuid not null, seat_ids uuid[] not null,
  status text not null default 'held', expires_at timestamptz not null,
  created_at timestamptz not null default now());
create table if not exists peer_bookings (
  id uuid primary key default gen_random_uuid(), hold_id uuid not null unique references peer_holds,
  payment_reference text, created_at timestamptz not null default now());`;

const problem = (res, status, code) => res.status(status).json({ status, code });

async function inTransaction(work) {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query(result.commit ? 'COMMIT' : 'ROLLBACK');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

const app = express();
app.use(express.json());

app.get('/ready', async (_req, res) => {
  await pool.query('select 1');
  res.json({ status: 'ready' });
});

app.post('/v1/events', async (req, res) => {
  const { name, starts_at: startsAt, layout } = req.body || {};
  const { sections, rows, seats_per_row: perRow } = layout || {};
  if (!name || !startsAt || ![sections, rows, perRow].every((n) => Number.isInteger(n) && n > 0 && n <= 1000)) {
    return problem(res, 400, 'VALIDATION_FAILED');
  }
  const event = await inTransaction(async (c) => {
    const { rows: [e] } = await c.query(
      'insert into peer_events (name, starts_at) values ($1, $2) returning id', [name, startsAt]);
    await c.query(
      `insert into peer_seats (event_id, section, row_number, seat_number)
       select $1, 'S' || s, r, n from generate_series(1, $2::int) s, generate_series(1, $3::int) r,
              generate_series(1, $4::int) n`, [e.id, sections, rows, perRow]);
    return { commit: true, id: e.id };
  });
  res.status(201).json({ id: event.id, name });
});

app.get('/v1/events/:id/seats', async (req, res) => {
  const cursor = req.query.cursor;
  if (!UUID.test(req.params.id) || (cursor && !UUID.test(cursor))) return problem(res, 400, 'VALIDATION_FAILED');
  const limit = Math.min(Math.max(Number(req.query.limit) || 100, 1), 10000);
  const { rows } = await pool.query(
    `select id, section, row_number, seat_number, status from peer_seats
      where event_id = $1 and ($2::uuid is null or id > $2) order by id limit $3`,
    [req.params.id, cursor || null, limit]);
  res.json({ seats: rows, next_cursor: rows.length === limit ? rows[rows.length - 1].id : null });
});

app.post('/v1/events/:id/holds', async (req, res) => {
  const seatIds = req.body && req.body.seat_ids;
  if (!UUID.test(req.params.id) || !Array.isArray(seatIds) || seatIds.length < 1 || seatIds.length > 10
      || !seatIds.every((s) => typeof s === 'string' && UUID.test(s))) {
    return problem(res, 400, 'VALIDATION_FAILED');
  }
  const ids = [...new Set(seatIds)].sort();
  const result = await inTransaction(async (c) => {
    const { rows } = await c.query(
      `select id, status = 'available' or (status = 'held' and held_until < now()) as free
         from peer_seats where id = any($1::uuid[]) and event_id = $2 order by id for update`,
      [ids, req.params.id]);
    if (rows.length !== ids.length) return { status: 404, code: 'SEAT_NOT_FOUND' };
    if (!rows.every((r) => r.free)) return { status: 409, code: 'SEAT_UNAVAILABLE' };
    const { rows: [hold] } = await c.query(
      `insert into peer_holds (event_id, seat_ids, expires_at)
       values ($1, $2, now() + make_interval(secs => $3)) returning id, expires_at`,
      [req.params.id, ids, HOLD_SECONDS]);
    await c.query(
      `update peer_seats set status = 'held', hold_id = $2, held_until = $3 where id = any($1::uuid[])`,
      [ids, hold.id, hold.expires_at]);
    return { commit: true, status: 201, body: { id: hold.id, seat_ids: ids, expires_at: hold.expires_at } };
  });
  if (result.body) return res.status(result.status).json(result.body);
  problem(res, result.status, result.code);
});

app.post('/v1/holds/:id/confirm', async (req, res) => {
  if (!UUID.test(req.params.id)) return problem(res, 400, 'VALIDATION_FAILED');
  const payment = req.body && req.body.payment_reference;
  const result = await inTransaction(async (c) => {
    const { rows: [hold] } = await c.query(
      'select seat_ids, status, expires_at > now() as live from peer_holds where id = $1 for update',
      [req.params.id]);
    if (!hold) return { status: 404, code: 'HOLD_NOT_FOUND' };
    if (hold.status !== 'held') return { status: 409, code: 'HOLD_NOT_ACTIVE' };
    if (!hold.live) return { status: 410, code: 'HOLD_EXPIRED' };
    const { rows: [booking] } = await c.query(
      'insert into peer_bookings (hold_id, payment_reference) values ($1, $2) returning id',
      [req.params.id, payment || null]);
    await c.query(`update peer_holds set status = 'confirmed' where id = $1`, [req.params.id]);
    await c.query(
      `update peer_seats set status = 'booked', held_until = null where id = any($1::uuid[]) and hold_id = $2`,
      [hold.seat_ids, req.params.id]);
    return { commit: true, status: 201, body: { id: booking.id, hold_id: req.params.id, seat_ids: hold.seat_ids } };
  });
  if (result.body) return res.status(result.status).json(result.body);
  problem(res, result.status, result.code);
});

app.use((err, _req, res, _next) => {
  console.error(err);
  problem(res, 500, 'INTERNAL');
});

async function main() {
  await pool.query(SCHEMA);
  const [host, port] = (process.env.LISTEN_ADDR || '127.0.0.1:8080').split(':');
  const server = app.listen(Number(port), host, () => console.log(`peer-node listening on ${host}:${port}`));
  // Stop as holdfast does on SIGTERM: finish what is in flight, then exit 0.
  process.on('SIGTERM', () => server.close(() => pool.end().then(() => process.exit(0))));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

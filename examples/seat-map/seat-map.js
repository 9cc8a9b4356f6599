// A seat map kept live from holdfast's stream, on another origin than the API (CORS).
//
//   index.html?api=http://127.0.0.1:8080&event=EVENT_ID&token=USER_JWT[&ttl=SECONDS]
//
// The protocol (README, "Live streams"): read the map, remember the first page's feed_cursor,
// open the stream after it, and apply a seat's change only when its version is newer. On
// `reset`, read the map again. EventSource reconnects by itself with Last-Event-ID.

const params = new URLSearchParams(location.search);
const api = (params.get('api') || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const eventId = params.get('event');
const token = params.get('token');
const ttl = params.get('ttl') ? Number(params.get('ttl')) : undefined;

/** What each problem code means to a person. */
const MESSAGES = {
  SEAT_UNAVAILABLE: 'Sorry, that seat has just been taken by someone else.',
  UNKNOWN_SEATS: 'That seat does not exist in this event.',
  SEAT_LOCKED: 'Someone is booking that seat right now. Try again in a moment.',
  HOLD_EXPIRED: 'Your hold expired: the seat is free again.',
  HOLD_NOT_ACTIVE: 'This hold is no longer active.',
  HOLD_LIFETIME_EXCEEDED: 'This hold cannot be extended any further.',
  TOO_MANY_HOLDS: 'You hold as many seats as you may. Confirm or release one first.',
  EVENT_STARTED: 'This event has already started.',
  IDEMPOTENCY_IN_PROGRESS: 'Still working on your last click…',
  IDEMPOTENCY_KEY_REUSED: 'That request was already sent with different content.',
  CONCURRENT_MODIFICATION: 'Something changed meanwhile. Please try again.',
  RATE_LIMITED: 'Too many clicks at once. Slow down a little.',
  UNAUTHENTICATED: 'Please sign in again (the token is missing or expired).',
  FORBIDDEN: 'You are not allowed to do that.',
  NOT_FOUND: 'Not found: the event or hold no longer exists.',
  VALIDATION_FAILED: 'The request was not valid.',
  LOCK_UNAVAILABLE: 'Booking is briefly unavailable. Nothing was changed; try again.',
  DATABASE_UNAVAILABLE: 'Booking is briefly unavailable. Nothing was changed; try again.',
  TIMEOUT: 'That took too long. Try again: a retry never books twice.',
  INTERNAL: 'Something went wrong on our side.',
};

const seats = new Map(); // id -> { status, version, el }
let hold = null; // { id, seat_ids, expires_at }
let stream = null;
let countdown = null;

const $ = (id) => document.getElementById(id);

function say(text, kind = 'info', code = '') {
  const message = $('message');
  message.textContent = text;
  message.dataset.kind = kind;
  message.dataset.code = code;
}

function sayProblem(problem) {
  const code = problem?.code || 'INTERNAL';
  say(MESSAGES[code] || problem?.title || 'Something went wrong.', 'error', code);
}

async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (method === 'POST') {
    headers['Idempotency-Key'] = crypto.randomUUID();
    headers['Content-Type'] = 'application/json';
  }
  let response;
  try {
    response = await fetch(api + path, { method, headers, body: body && JSON.stringify(body) });
  } catch (err) {
    throw { code: 'LOCK_UNAVAILABLE', title: 'The service cannot be reached.' };
  }
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (!response.ok) throw json || { code: 'INTERNAL' };
  return json;
}

function setSeat(id, status, version) {
  const seat = seats.get(id);
  if (!seat || seat.version > version) return; // older news than what we show
  seat.status = status;
  seat.version = version;
  seat.el.dataset.status = status;
  seat.el.dataset.mine = String(Boolean(hold && status === 'HELD' && hold.seat_ids.includes(id)));
}

function draw(rows) {
  const map = $('map');
  map.replaceChildren();
  for (const [name, rowSeats] of rows) {
    const row = document.createElement('div');
    row.className = 'row';
    const label = document.createElement('span');
    label.className = 'row-label';
    label.textContent = name;
    row.append(label);
    for (const s of rowSeats) {
      const el = document.createElement('button');
      el.type = 'button';
      el.className = 'seat';
      el.textContent = String(s.number);
      el.dataset.label = s.label;
      el.dataset.seatId = s.id;
      el.title = `${s.label}, ${(s.price_cents / 100).toFixed(2)}`;
      el.addEventListener('click', () => holdSeat(s.id, s.label));
      row.append(el);
      // On a re-read, keep what the stream already said if it is newer than this page.
      const known = seats.get(s.id);
      const newer = known && known.version > s.version;
      seats.set(s.id, { status: newer ? known.status : s.status, version: newer ? known.version : s.version, el });
      el.dataset.status = seats.get(s.id).status;
      el.dataset.mine = String(Boolean(hold && el.dataset.status === 'HELD' && hold.seat_ids.includes(s.id)));
    }
    map.append(row);
  }
}

/** Reads the whole map; answers the feed cursor of its first page. */
async function loadMap() {
  const event = await fetch(`${api}/v1/events/${eventId}`).then((r) => r.json());
  $('title').textContent = event.name || 'Seat map';
  const all = [];
  let cursor = null;
  let feedCursor = null;
  do {
    const page = await fetch(`${api}/v1/events/${eventId}/seats?limit=1000${cursor ? `&cursor=${cursor}` : ''}`).then((r) => r.json());
    feedCursor ??= page.feed_cursor;
    all.push(...page.seats);
    cursor = page.next_cursor;
  } while (cursor);
  const rows = new Map();
  for (const s of all) {
    const key = `${s.section}-${s.row}`;
    if (!rows.has(key)) rows.set(key, []);
    rows.get(key).push(s);
  }
  draw(rows);
  return feedCursor;
}

function follow(after) {
  stream?.close();
  stream = new EventSource(`${api}/v1/events/${eventId}/stream?after=${after}`);
  stream.addEventListener('ready', () => { $('conn').dataset.state = 'live'; $('conn').textContent = 'live'; });
  stream.addEventListener('seats.changed', (e) => {
    for (const s of JSON.parse(e.data).seats) setSeat(s.id, s.status, s.version);
  });
  stream.addEventListener('reset', async () => {
    stream.close();
    follow(await loadMap());
  });
  stream.onerror = () => { $('conn').dataset.state = 'reconnecting'; $('conn').textContent = 'reconnecting…'; };
}

function showHold() {
  clearInterval(countdown);
  $('hold').hidden = !hold;
  if (!hold) return;
  $('hold-seats').textContent = hold.labels.join(', ');
  const tick = () => {
    const left = Math.max(0, Math.ceil((new Date(hold.expires_at) - Date.now()) / 1000));
    $('countdown').textContent = `${left} s`;
    if (left === 0) {
      const ids = hold.seat_ids;
      hold = null;
      showHold();
      for (const id of ids) { const s = seats.get(id); if (s) s.el.dataset.mine = 'false'; }
      say(MESSAGES.HOLD_EXPIRED, 'error', 'HOLD_EXPIRED');
    }
  };
  tick();
  countdown = setInterval(tick, 250);
}

async function holdSeat(id, label) {
  if (hold?.seat_ids.includes(id)) return;
  say('Holding…');
  try {
    const created = await call('POST', `/v1/events/${eventId}/holds`, ttl ? { seat_ids: [id], ttl_seconds: ttl } : { seat_ids: [id] });
    hold = { id: created.id, seat_ids: created.seat_ids, labels: [label], expires_at: created.expires_at };
    setSeat(id, 'HELD', seats.get(id).version); // the stream brings the new version
    seats.get(id).el.dataset.mine = 'true';
    showHold();
    say(`${label} is yours until the countdown ends.`, 'ok', 'HELD');
  } catch (problem) {
    sayProblem(problem);
  }
}

$('confirm').addEventListener('click', async () => {
  if (!hold) return;
  try {
    const booking = await call('POST', `/v1/holds/${hold.id}/confirm`, {});
    say(`Booked ${hold.labels.join(', ')}. Booking ${booking.id}.`, 'ok', 'CONFIRMED');
    hold = null;
    showHold();
  } catch (problem) {
    sayProblem(problem);
  }
});

$('release').addEventListener('click', async () => {
  if (!hold) return;
  try {
    await call('DELETE', `/v1/holds/${hold.id}`);
    say(`Released ${hold.labels.join(', ')}.`, 'ok', 'RELEASED');
    hold = null;
    showHold();
  } catch (problem) {
    sayProblem(problem);
  }
});

if (!eventId || !token) {
  say('Open this page with ?api=…&event=EVENT_ID&token=USER_JWT', 'error', 'SETUP');
} else {
  loadMap().then(follow, (err) => say(`Cannot read the seat map: ${err}`, 'error', 'SETUP'));
}

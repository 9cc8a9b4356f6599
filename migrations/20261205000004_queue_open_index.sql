-- The queues every instance paces, read every QUEUE_PACE_INTERVAL_MS by each instance: found
-- without scanning every event.
create index events_queue_open_idx on events (starts_at) where queue_enabled;

-- The tables bench/minimal_hold.sql runs on: a seat and a hold with what a hold must record,
-- primary keys only. Created beside holdfast's schema in the ceiling database, from its seats.
create table minimal_seats (
    id               uuid primary key,
    event_id         uuid not null,
    hold_id          uuid,
    hold_expires_at  timestamptz,
    version          bigint not null default 0
);
create table minimal_holds (
    id          uuid primary key,
    event_id    uuid not null,
    user_id     text not null,
    status      text not null,
    expires_at  timestamptz not null
);
insert into minimal_seats (id, event_id) select id, event_id from seats;
analyze minimal_seats;

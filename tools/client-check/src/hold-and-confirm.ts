// A frontend's use of the generated client: read the seat map, hold a seat, confirm it.
// Type-checked against the client generated from holdfast's OpenAPI document; a change to the
// contract that breaks this program fails CI.
import createClient from "openapi-fetch";
import type { paths, components } from "../generated/holdfast";

type Problem = components["schemas"]["Problem"];

export async function holdAndConfirm(baseUrl: string, token: string, eventId: string): Promise<string> {
  const client = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });

  const seats = await client.GET("/v1/events/{event_id}/seats", {
    params: { path: { event_id: eventId }, query: { status: "available", limit: 1 } },
  });
  if (!seats.data) throw new Error("no seat map");
  const seat = seats.data.seats[0];
  if (!seat) throw new Error("sold out");

  const hold = await client.POST("/v1/events/{event_id}/holds", {
    params: { path: { event_id: eventId }, header: { "Idempotency-Key": crypto.randomUUID() } },
    body: { seat_ids: [seat.id], ttl_seconds: 300 },
  });
  if (hold.error) {
    const problem: Problem = hold.error;
    throw new Error(`${problem.code}: ${problem.detail}`);
  }
  const expiresAt: string = hold.data.expires_at;

  const booking = await client.POST("/v1/holds/{hold_id}/confirm", {
    params: { path: { hold_id: hold.data.id }, header: { "Idempotency-Key": crypto.randomUUID() } },
    body: { payment_reference: "pay_123" },
  });
  if (booking.error) throw new Error(`${booking.error.code} (hold expired at ${expiresAt})`);
  return booking.data.id;
}

// Rooms and slots have their own availability operations, with distinct names.
export async function availability(baseUrl: string, inventoryId: string, resourceId: string) {
  const client = createClient<paths>({ baseUrl });
  const nights = await client.GET("/v1/inventories/{inventory_id}/availability", {
    params: { path: { inventory_id: inventoryId }, query: { from: "2027-03-01", to: "2027-03-08" } },
  });
  const slots = await client.GET("/v1/resources/{resource_id}/availability", {
    params: { path: { resource_id: resourceId }, query: { from: "2027-03-01", to: "2027-03-02", duration_minutes: 60 } },
  });
  return { nights: nights.data?.nights.length ?? 0, slots: slots.data?.slots.length ?? 0 };
}

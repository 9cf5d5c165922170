"""Webhooks (issue 27): the outbox written with each change, subscriptions, Standard Webhooks
signing, SSRF-safe outbound calls and delivery with retries (catalogue, outbox, subscriptions,
signing, outbound, delivery)."""

"""The management API under ``/api/v1``, plus health probes and ``/openapi.json``."""

from __future__ import annotations

from starlette.routing import Route

from webhookd.api import (
    account,
    admin,
    callbacks,
    calls,
    dashboard,
    deliveries,
    events,
    health,
    subscriptions,
)

SUBSCRIPTION = "/api/v1/webhook-subscriptions/{subscription_id}"
ADMIN = "/api/v1/admin"
PUBLISH_PATH = "/api/v1/events"  # also served ahead of the router: see webhookd.web.HotRoute


def routes() -> list[Route]:
    return [
        Route(PUBLISH_PATH, events.publish_event, methods=["POST"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/openapi.json", health.openapi, methods=["GET"], include_in_schema=False),
        Route("/metrics", health.metrics, methods=["GET"], include_in_schema=False),
        Route("/api/v1/auth/whoami", account.whoami, methods=["GET"]),
        Route("/api/v1/dashboard-links", dashboard.create_dashboard_link, methods=["POST"]),
        Route("/api/v1/events", events.list_events, methods=["GET"]),
        Route("/api/v1/events/batch", events.publish_batch, methods=["POST"]),
        Route("/api/v1/events/{event_id}", events.get_event, methods=["GET"]),
        Route("/api/v1/event-types", events.event_types, methods=["GET"]),
        Route("/api/v1/webhook-subscriptions", subscriptions.create_subscription, methods=["POST"]),
        Route("/api/v1/webhook-subscriptions", subscriptions.list_subscriptions, methods=["GET"]),
        Route(SUBSCRIPTION, subscriptions.get_subscription, methods=["GET"]),
        Route(SUBSCRIPTION, subscriptions.patch_subscription, methods=["PATCH"]),
        Route(SUBSCRIPTION, subscriptions.delete_subscription, methods=["DELETE"]),
        Route(f"{SUBSCRIPTION}/enable", subscriptions.enable_subscription, methods=["POST"]),
        Route(f"{SUBSCRIPTION}/rotate-secret", subscriptions.rotate_secret, methods=["POST"]),
        Route(f"{SUBSCRIPTION}/test", subscriptions.test_subscription, methods=["POST"]),
        Route(f"{SUBSCRIPTION}/recover", subscriptions.recover, methods=["POST"]),
        Route(f"{SUBSCRIPTION}/deliveries", deliveries.list_deliveries, methods=["GET"]),
        Route("/api/v1/deliveries/{delivery_id}", deliveries.get_delivery, methods=["GET"]),
        Route("/api/v1/deliveries/{delivery_id}/retry", deliveries.retry_delivery, methods=["POST"]),
        Route("/api/v1/callback-secret", callbacks.get_callback_secret, methods=["GET"]),
        Route("/api/v1/callback-secret", callbacks.rotate_callback_secret, methods=["POST"]),
        Route("/api/v1/keys", admin.create_key, methods=["POST"]),
        Route("/api/v1/sources", admin.create_source, methods=["POST"]),
        Route("/api/v1/backlog", admin.backlog, methods=["GET"]),
        Route(f"{ADMIN}/customers", admin.list_customers, methods=["GET"]),
        Route(f"{ADMIN}/customers/{{customer_id}}/keys", admin.list_keys, methods=["GET"]),
        Route(f"{ADMIN}/keys/{{key_id}}/revoke", admin.revoke_key, methods=["POST"]),
        Route(f"{ADMIN}/subscriptions", admin.list_subscriptions, methods=["GET"]),
        Route(
            f"{ADMIN}/subscriptions/{{subscription_id}}/enable", admin.enable_subscription, methods=["POST"]
        ),
        Route(f"{ADMIN}/subscriptions/{{subscription_id}}/recover", admin.recover, methods=["POST"]),
        Route(f"{ADMIN}/deliveries/{{delivery_id}}/retry", admin.retry_delivery, methods=["POST"]),
        Route("/api/v1/calls", calls.list_calls, methods=["GET"]),
        Route("/api/v1/calls/{call_ref}", calls.get_call, methods=["GET"]),
    ]

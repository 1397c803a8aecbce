"""The management API under ``/api/v1``, plus health probes."""

from __future__ import annotations

from starlette.routing import Route

from webhookd.api import events, health, subscriptions


def routes() -> list[Route]:
    return [
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/api/v1/events", events.publish_event, methods=["POST"]),
        Route("/api/v1/webhook-subscriptions", subscriptions.create_subscription, methods=["POST"]),
        Route("/api/v1/webhook-subscriptions", subscriptions.list_subscriptions, methods=["GET"]),
        Route(
            "/api/v1/webhook-subscriptions/{subscription_id}",
            subscriptions.get_subscription,
            methods=["GET"],
        ),
        Route(
            "/api/v1/webhook-subscriptions/{subscription_id}",
            subscriptions.delete_subscription,
            methods=["DELETE"],
        ),
        Route(
            "/api/v1/webhook-subscriptions/{subscription_id}/enable",
            subscriptions.enable_subscription,
            methods=["POST"],
        ),
    ]

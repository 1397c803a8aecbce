"""webhookd: durable, signed webhook delivery for voice-AI call events."""

__version__ = "0.1.0"

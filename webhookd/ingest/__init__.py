"""Carrier callbacks in: one small adapter per carrier, one pure normalizer, the call state machine;
``routes`` serves them (imported by the app, not here: the API reads the state machine's names, and
the route's OpenAPI operation comes from the API)."""

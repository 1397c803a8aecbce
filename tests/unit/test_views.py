"""The API's JSON shapes of domain records."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from webhookd.api.views import event_body, event_json
from webhookd.models import Event, NewEvent

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(
    data=st.dictionaries(st.text(), json_values, max_size=5),
    idempotency_key=st.none() | st.text(min_size=1),
    callback_url=st.none() | st.just("https://app.example.com/cb?a=1&b=\u00e9"),
)
def test_event_body_is_event_json_serialized(
    data: dict[str, Any], idempotency_key: str | None, callback_url: str | None
) -> None:
    new = NewEvent("cus_1", "call.completed", data, idempotency_key, callback_url=callback_url)
    event = Event(
        new.id,
        new.customer_id,
        new.type,
        idempotency_key,
        orjson.dumps(new.envelope()),
        new.created_at,
        callback_url,
    )

    assert orjson.loads(event_body(event)) == event_json(event)

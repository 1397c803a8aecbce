"""The OpenAPI document's input rules and the API's checks are one rule: whatever a documented
pattern and length admit, the check takes, and whatever the check takes, the document admits.
Schemathesis probes this over HTTP with a few hundred requests; these probe it by the thousand."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from webhookd import api
from webhookd.actions import valid_url
from webhookd.api.openapi import build_openapi
from webhookd.exceptions import ApiError, InvalidInput
from webhookd.inputs import (
    CUSTOMER_ID_PATTERN,
    EVENT_TYPE_PATTERN,
    HTTP_URL_PATTERN,
    MAX_EVENT_TYPE_LENGTH,
    MAX_URL_LENGTH,
    check_customer_id,
    is_event_type,
)
from webhookd.models import CALL_REF_PATTERN, call_ref, is_id, parse_call_ref
from webhookd.store.base import call_cursor_pattern, decode_call_cursor

DOCUMENT = build_openapi(api.routes())
SCHEMAS: dict[str, Any] = DOCUMENT["components"]["schemas"]
CALM = settings(deadline=None)
"""No deadline: the machine may be busy with other tests, and a slow example is no failure here."""
URL_CHARACTERS = st.sampled_from("hHtTpPsS:/[]?#@%.-_~!$&'()*+,;=09aAfFzZ \n\x00é")


def _documented(schema: dict[str, Any], value: str) -> bool:
    """Whether ``value`` meets a string schema's pattern and lengths, as JSON Schema reads them: the
    pattern is a search, and its ``$`` is the end of the text (Python's would allow a newline)."""
    fits = schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value))
    pattern = re.sub(r"\$$", r"\\Z", schema["pattern"])
    return fits and re.search(pattern, value) is not None


def _url_accepted(value: str) -> bool:
    try:
        valid_url(value)
    except ApiError:
        return False
    return True


@CALM
@given(st.from_regex(HTTP_URL_PATTERN, fullmatch=True).filter(lambda url: len(url) <= MAX_URL_LENGTH))
def test_every_documented_url_is_accepted(url: str) -> None:
    assert _url_accepted(url)


@CALM
@given(st.text(URL_CHARACTERS, max_size=40).map(lambda tail: "http://" + tail))
@example("http://0\n")  # a regex's "$" also matches before a final newline
def test_the_api_accepts_a_url_only_if_the_document_does(url: str) -> None:
    url_schema = SCHEMAS["SubscriptionCreate"]["properties"]["url"]
    assert _url_accepted(url) == _documented(url_schema, url)
    assert url_schema == SCHEMAS["SubscriptionPatch"]["properties"]["url"]
    assert SCHEMAS["PublishEvent"]["properties"]["callback_url"]["pattern"] == url_schema["pattern"]


@CALM
@given(st.from_regex(EVENT_TYPE_PATTERN, fullmatch=True) | st.text("abc._1Z", max_size=110))
def test_an_event_type_is_taken_exactly_when_the_document_allows_it(value: str) -> None:
    documented = SCHEMAS["PublishEvent"]["properties"]["type"]
    assert documented["maxLength"] == MAX_EVENT_TYPE_LENGTH
    assert is_event_type(value) == _documented(documented, value)


@CALM
@given(st.from_regex(CUSTOMER_ID_PATTERN, fullmatch=True) | st.text("ab.:_-/ \n", max_size=130))
def test_a_customer_id_is_taken_exactly_when_the_document_allows_it(value: str) -> None:
    documented = SCHEMAS["KeyCreate"]["properties"]["customer_id"]
    try:
        taken = check_customer_id(value) == value
    except InvalidInput:
        taken = False
    assert taken == _documented(documented, value)


@pytest.mark.parametrize(
    ("path", "name", "prefix"),
    [
        ("/api/v1/events/{event_id}", "event_id", "evt"),
        ("/api/v1/deliveries/{delivery_id}", "delivery_id", "dlv"),
        ("/api/v1/webhook-subscriptions/{subscription_id}", "subscription_id", "sub"),
    ],
)
def test_a_path_id_is_documented_as_the_ids_the_api_looks_up(path: str, name: str, prefix: str) -> None:
    (parameter,) = [p for p in DOCUMENT["paths"][path]["get"]["parameters"] if p["name"] == name]
    pattern = parameter["schema"]["pattern"]

    @CALM
    @given(st.from_regex(pattern, fullmatch=True) | st.text(f"{prefix}_0123ABZIO", max_size=32))
    def agree(value: str) -> None:
        assert is_id(value, prefix) == _documented(parameter["schema"], value)

    agree()


def _call_ref_taken(value: str) -> bool:
    try:
        carrier, call_id = parse_call_ref(value)
    except ValueError:
        return False
    return call_ref(carrier, call_id) == value


@CALM
@given(
    st.from_regex(CALL_REF_PATTERN, fullmatch=True)
    | st.text("twilio:telnyx_x/\n\x00", max_size=24)
    | st.integers(250, 260).map(lambda n: "vapi:" + "v" * n)
)
@example("twilio:CA1\n")  # a regex's "$" also matches before a final newline
def test_a_call_reference_is_taken_exactly_when_the_document_allows_it(value: str) -> None:
    (parameter,) = DOCUMENT["paths"]["/api/v1/calls/{call_ref}"]["get"]["parameters"]
    assert _call_ref_taken(value) == _documented(parameter["schema"], value)


@CALM
@given(st.from_regex(call_cursor_pattern(), fullmatch=True) | st.text("0123.-twilio:CA\n\x00", max_size=24))
def test_a_calls_cursor_is_taken_exactly_when_the_document_allows_it(value: str) -> None:
    (parameter,) = [
        p for p in DOCUMENT["paths"]["/api/v1/calls"]["get"]["parameters"] if p["name"] == "cursor"
    ]
    try:
        decode_call_cursor(value)
        taken = True
    except ValueError:
        taken = False
    assert taken == _documented(parameter["schema"], value)

"""CloudEvents binary mode: an event whose attributes travel as headers and whose data is the
body (HTTP: `ce-<name>` headers, percent-encoded; Kafka: `ce_<name>` headers, UTF-8 bytes),
rebuilt as the structured event the decoder reads.

The data goes in as `data` byte for byte when it is one JSON value (the decoder's strict JSON
rules then see it), else as a JSON string of its text, which the decoder rejects as data that
is not an object: data can never add attributes. The content type goes in as
`datacontenttype` when there is one. Attributes come first in a fixed order
(specversion, id, source, type, time, subject), the others sorted, so equal events rebuild to
equal bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Final

__all__ = [
    "KAFKA_CONTENT_TYPE",
    "KAFKA_PREFIX",
    "kafka_binary_event",
    "structured_event",
]

KAFKA_PREFIX: Final = "ce_"
KAFKA_CONTENT_TYPE: Final = "content-type"
_FIRST: Final[tuple[str, ...]] = ("specversion", "id", "source", "type", "time", "subject")
_BLANK: Final = b" \t\r\n"
# The Kafka binding: a message whose content type is this (or a subtype: `+json`, batch) is
# in structured mode, whatever its headers
_STRUCTURED_MEDIA: Final = "application/cloudevents"


def structured_event(attributes: Mapping[str, str], data: bytes, content_type: str | None
                     ) -> bytes:
    """The structured JSON event of binary mode's `attributes` (names without their prefix),
    `data` and content type (its media type only; None or "" for none)."""
    named = dict(attributes)
    media = (content_type or "").partition(";")[0].strip().lower()
    if media:
        named["datacontenttype"] = media
    ordered = [key for key in _FIRST if key in named]
    ordered += sorted(key for key in named if key not in _FIRST)
    head = ",".join(f"{json.dumps(key)}:{json.dumps(named[key], ensure_ascii=False)}"
                    for key in ordered)
    body = data.strip(_BLANK)
    tail = b',"data":' + _one_value(body) if body else b""
    return b"{" + head.encode() + tail + b"}"


def _one_value(data: bytes) -> bytes:
    """`data` when it is one JSON value or not UTF-8 (the decoder rejects the whole event
    then), else its text as a JSON string."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return data
    try:
        json.loads(text)
    except ValueError:
        return json.dumps(text, ensure_ascii=False).encode()
    return data


def kafka_binary_event(headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes],
                       value: bytes | None) -> bytes | None:
    """The structured event of a Kafka message in binary mode (a `ce_specversion` header and
    a content type that is not `application/cloudevents...`), or None for a message in
    structured mode. A header that is not UTF-8 is kept with its
    bad bytes replaced, so the decoder names the attribute it cannot read."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    attributes: dict[str, str] = {}
    content_type: str | None = None
    for name, raw in pairs:
        lowered = name.lower()
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else ""
        if lowered.startswith(KAFKA_PREFIX) and len(lowered) > len(KAFKA_PREFIX):
            attributes[lowered[len(KAFKA_PREFIX):]] = text
        elif lowered == KAFKA_CONTENT_TYPE:
            content_type = text
    if "specversion" not in attributes or (content_type or "").strip().lower().startswith(
            _STRUCTURED_MEDIA):
        return None
    return structured_event(attributes, value or b"", content_type)

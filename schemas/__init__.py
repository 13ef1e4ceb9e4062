"""driftline.schemas: the Avro contract (``*.avsc``), topic names, codec and validation.

Imports nothing else of the project; every other component builds on it.
"""

from driftline.schemas.codec import DEFAULT_MAX_MESSAGE_BYTES, Codec, DecodeError, EncodeError
from driftline.schemas.ids import event_id
from driftline.schemas.registry import (
    ConfluentRegistry,
    RegistryError,
    SchemaRegistry,
    StaticRegistry,
    UnknownSchemaId,
    load_schema,
)
from driftline.schemas.validation import InvalidEvent, validate_outcome, validate_prediction

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "Codec",
    "ConfluentRegistry",
    "DecodeError",
    "EncodeError",
    "InvalidEvent",
    "RegistryError",
    "SchemaRegistry",
    "StaticRegistry",
    "UnknownSchemaId",
    "event_id",
    "load_schema",
    "validate_outcome",
    "validate_prediction",
]

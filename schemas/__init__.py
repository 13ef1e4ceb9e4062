"""driftline.schemas: the Avro contract (``*.avsc``), topic names, codec and validation.

Imports nothing else of the project; every other component builds on it.
"""

import lazy_loader

# Names load on first use (PEP 562, through lazy_loader), so importing one light
# submodule (the CLI's parsers: `driftline --help`) does not import everything here.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "codec": ["DEFAULT_MAX_MESSAGE_BYTES", "Codec", "DecodeError", "EncodeError"],
        "ids": ["event_id"],
        "registry": [
            "ConfluentRegistry",
            "RegistryError",
            "SchemaRegistry",
            "StaticRegistry",
            "UnknownSchemaId",
            "load_schema",
        ],
        "validation": ["InvalidEvent", "validate_outcome", "validate_prediction"],
    },
)

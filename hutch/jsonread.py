"""JSON documents read with the C scanner that the json package itself uses (_json), without importing
json: json imports re, and through it enum, to compile patterns for a pure-Python scanner that the C
one makes unused. Measured with python -X importtime on this host: json 12-13 ms, _json 0.4 ms, on
every `hutch shell`, `list` and `status` (each reads the registry). Only loads() of a whole document;
writing, and anything rarer, uses json.
"""

from __future__ import annotations

import _json

_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _Context:
    # The attributes json.decoder.JSONDecoder gives the C scanner, with json.loads()'s defaults.
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_CONSTANTS.__getitem__)


_scan = _json.make_scanner(_Context())  # type: ignore[arg-type]  # typeshed: a context is any object


def loads(text: str) -> object:
    """As json.loads(TEXT); ValueError (json.JSONDecodeError where the scanner says more) if TEXT is not
    one JSON document."""
    s = text.strip(" \t\n\r")
    try:
        obj, end = _scan(s, 0)
    except (StopIteration, SystemError):
        # Not JSON. The scanner raises its errors as json.decoder's, and only when that module is
        # loaded already (else SystemError): json says what is wrong, the way it says it.
        import json

        return json.loads(text)
    if end != len(s):
        import json

        return json.loads(text)  # raises "Extra data"
    return obj

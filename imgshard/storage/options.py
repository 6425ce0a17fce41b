"""Storage options: read from ``--storage-option KEY=VALUE``, and never shown in a message.

Storage options never appear in a repr, a log line or a manifest; in an error message, the value
of every option whose key looks secret (:data:`SECRET_KEY`), of any type, is masked, while the
others (an endpoint, a region) stay readable to say what failed.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

from ..errors import ImgshardError

#: Storage-option keys whose values are secrets: masked in every message, nested ones too.
SECRET_KEY = re.compile(r"key|secret|token|passw|credential|session|auth|signature|private|cert",
                        re.IGNORECASE)


class StorageError(ImgshardError):
    """A URL cannot be reached or a remote file cannot be read or written (one line, no secret)."""


def parse_storage_options(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs into fsspec storage options.

    Values are read as JSON where they parse (``true``, ``3``, ``{"a": 1}``) and as text
    otherwise; a dotted key (``client_kwargs.region_name=eu-west-1``) fills a nested dict.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():  # the value is never echoed: it may be a secret
            raise StorageError("--storage-option expects KEY=VALUE" if not sep
                               else "--storage-option has an empty KEY")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        *parents, leaf = key.strip().split(".")
        target = options
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return options


def describe_error(error: BaseException, options: dict[str, Any],
                   also_secret: tuple[str, ...] = ()) -> str:
    """A one-line description of a storage failure with every secret masked: the values of
    the options whose key looks secret (:data:`SECRET_KEY`, any type: numbers too) and
    ``also_secret``. Other values, such as the endpoint that failed, are kept."""
    message = " ".join(str(error).split()) or type(error).__name__
    secrets = [spelling for secret in [*secret_values(options), *also_secret]
               for spelling in spellings(secret)]
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            message = message.replace(secret, "***")
        for part in secret.split(":") if ":" in secret else ():
            if len(part) >= 4:
                message = message.replace(part, "***")
    return f"{type(error).__name__}: {message}"[:200]


def spellings(secret: str) -> set[str]:
    """The ways a secret may be written in an error message: as is, percent-encoded (in a
    URL's query, as a SAS token or a signed URL shows it) or backslash-escaped (in a repr)."""
    return {secret, urllib.parse.quote(secret), urllib.parse.quote(secret, safe=""),
            urllib.parse.quote_plus(secret), secret.encode("unicode_escape").decode("ascii")}


def secret_values(options: Any, secret: bool = False) -> Iterator[str]:
    """The text of every value under a secret-like key of ``options`` (nested dicts and lists
    too; a secret key's whole subtree is secret)."""
    if isinstance(options, dict):
        for key, value in options.items():
            yield from secret_values(value, secret or SECRET_KEY.search(str(key)) is not None)
    elif isinstance(options, (list, tuple)):
        for value in options:
            yield from secret_values(value, secret)
    elif secret and options is not None:
        yield str(options)

"""Secrets in URLs: what a secret is, hiding it wherever a URL is shown, and where URLs come from.

Owns DESIGN.md's "Secrets" contract. A URL's secrets are found by parsing the URL, never by a
pattern over its text: a database URL (``postgresql://``, ``mysql+pymysql://``, ``sqlite://`` ...)
is read by SQLAlchemy's :func:`~sqlalchemy.engine.make_url`, exactly as Optuna and MLflow read it,
and every URL by :func:`urllib.parse.urlsplit` as well; what either reading calls a password is
hidden. Hidden, as ``***``:

* the password of the user information (``user:***@host``; the user name stays);
* the value of every query or fragment parameter whose name says secret: a name holding
  ``password``, ``passwd``, ``passphrase``, ``secret``, ``token``, ``apikey`` or ``credential``,
  or with a word (split on anything but letters and digits) ``pwd``, ``pass``, ``key``, ``sig``,
  ``signature`` or ``auth`` (``?password=``, ``?access_key=``, ``X-Amz-Security-Token``,
  ``sig=``). Names are compared decoded and in any case (``?PassWord=``, ``?pass%77ord=``).

A URL that cannot be parsed keeps only its scheme (``postgresql://***``). :func:`redact` takes
one URL, :func:`redact_text` every URL in a line of text (a message, a command's output),
:func:`redact_data` every URL-valued string in nested data (a resolved experiment, a JSON
summary). The boundaries call them: the terminal and every error line (``tuning.cli``), the
parent run's params, tags and ``config.yaml`` (``tuning.job``), messages (``tuning.config.redact``
is :func:`redact`). URLs reach child processes through the environment, never their command
line (:data:`URL_SETTINGS_ENV`).

Where the study storage comes from: ``--storage`` / ``--set study.storage=`` first, then
``$TUNING_STORAGE`` (:data:`STORAGE_ENV`), then the experiment file's ``study.storage``. The MLflow
tracking URI comes from ``$MLFLOW_TRACKING_URI`` as MLflow defines it. This module imports only
the standard library (SQLAlchemy when a database URL is redacted).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

__all__ = [
    "MASK",
    "STORAGE_ENV",
    "URL_SETTINGS_ENV",
    "carries_url",
    "has_secret",
    "is_secret_key",
    "redact",
    "redact_data",
    "redact_text",
    "storage_from_env",
    "url_settings_env",
    "url_settings_from_env",
]

MASK = "***"

STORAGE_ENV = "TUNING_STORAGE"
"""The Optuna storage URL, when neither ``--storage`` nor ``--set study.storage`` gives it."""

URL_SETTINGS_ENV = "TUNING_URL_SETTINGS"
"""How ``tuning run --workers N`` hands its URL-valued settings to its workers (a JSON list of
``[dotted.key, value]``), so that no URL appears on a worker's command line (``/proc/PID/cmdline``
is readable by every user of the machine; a process's environment only by its owner)."""

# Parameter names that hold a secret: as a substring of the name ...
_SECRET_PARTS = ("password", "passwd", "passphrase", "secret", "token", "apikey", "credential")
# ... or as one of its words.
_SECRET_WORDS = frozenset({"pwd", "pass", "key", "sig", "signature", "auth"})
# Database URLs, read as SQLAlchemy reads them (the schemes Optuna's and MLflow's stores take).
_SQL_SCHEMES = frozenset(
    {"sqlite", "postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle", "cockroachdb"}
)
# Where a URL starts in free text; the URL itself is then parsed (:func:`redact`).
_URL_START = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://")
_TRAILING = "'\"`),.;:]}>"


def is_secret_key(name: str) -> bool:
    """Whether a URL parameter named ``name`` (decoded) holds a secret (``password``,
    ``access_key``, ``X-Amz-Security-Token``, ``sig`` ...)."""
    lowered = name.lower()
    if any(part in lowered for part in _SECRET_PARTS):
        return True
    return any(word in _SECRET_WORDS for word in re.split(r"[^a-z0-9]+", lowered))


def redact(url: str) -> str:
    """``url`` with its password and secret parameters shown as ``***``; unchanged when it has
    none (or is no URL at all).

    >>> redact("postgresql://u:pw@db:5432/optuna?sslmode=require&password=x")
    'postgresql://u:***@db:5432/optuna?sslmode=require&password=***'
    """
    if not isinstance(url, str) or "://" not in url:
        return url
    scheme = url.partition("://")[0]
    try:
        out = url
        if scheme.split("+")[0].lower() in _SQL_SCHEMES:
            out = _redact_sql(out)
        return _redact_generic(out)
    except ValueError:  # not parseable: keep nothing but the scheme
        return f"{scheme}://{MASK}"


def _redact_sql(url: str) -> str:
    """The password and secret query values SQLAlchemy finds (the reading Optuna and MLflow
    use), hidden; ``url`` itself when there are none."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise ValueError(str(e)) from None
    query = dict(parsed.query)
    secret_query = [k for k in query if is_secret_key(k)]
    if parsed.password is None and not secret_query:
        return url
    base = parsed.set(query={}).render_as_string(hide_password=True)
    if not query:
        return base
    pairs = []
    for key, values in query.items():
        for value in (values,) if isinstance(values, str) else values:
            shown = MASK if key in secret_query and value else _quote(value)
            pairs.append(f"{_quote(key)}={shown}")
    return f"{base}?{'&'.join(pairs)}"


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="/:@,+-._~")


def _redact_generic(url: str) -> str:
    """The password of the user information and secret query or fragment values, as
    :func:`urllib.parse.urlsplit` reads the URL, hidden; ``url`` itself when there are none."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        user, _, password = userinfo.partition(":")
        if password and password != MASK:
            netloc = f"{user}:{MASK}@{host}"
    query = _redact_params(parts.query)
    fragment = _redact_params(parts.fragment)
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query, fragment=fragment))


def _redact_params(text: str) -> str:
    """``a=1&password=x`` -> ``a=1&password=***`` (raw text in, raw text out)."""
    if "=" not in text:
        return text
    pieces = []
    for piece in text.split("&"):
        key, eq, value = piece.partition("=")
        if eq and value and value != MASK and is_secret_key(unquote_plus(key)):
            piece = f"{key}={MASK}"
        pieces.append(piece)
    return "&".join(pieces)


def redact_text(text: str) -> str:
    """Every URL in ``text`` (a message, a line of output) redacted by :func:`redact`.

    A URL runs from its scheme to the next white space; quotes, brackets and punctuation that
    end it are kept outside (``'postgresql://u:***@h/db'``).
    """
    if not isinstance(text, str) or "://" not in text:
        return text
    out: list[str] = []
    pos = 0
    for match in _URL_START.finditer(text):
        start = match.start()
        if start < pos:  # inside the URL before
            continue
        end = start
        while end < len(text) and not text[end].isspace():
            end += 1
        token = text[start:end]
        core = token.rstrip(_TRAILING)
        out.append(text[pos:start])
        out.append(redact(core) + token[len(core) :])
        pos = end
    out.append(text[pos:])
    return "".join(out)


def redact_data(data: Any) -> Any:
    """A copy of ``data`` (mappings, lists, strings ...) with every string redacted by
    :func:`redact_text`."""
    if isinstance(data, str):
        return redact_text(data)
    if isinstance(data, dict):
        return {key: redact_data(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(redact_data(value) for value in data)
    return data


def has_secret(text: str) -> bool:
    """Whether ``text`` holds a URL with a secret in clear."""
    return redact_text(text) != text


def carries_url(value: object) -> bool:
    """Whether a setting's value (a string, or a mapping or list holding strings) holds a URL:
    such values travel to child processes through the environment."""
    return "://" in json.dumps(value, default=str)


def storage_from_env() -> str | None:
    """``$TUNING_STORAGE``, or ``None`` when unset or empty."""
    value = os.environ.get(STORAGE_ENV, "").strip()
    return value or None


def url_settings_from_env() -> list[tuple[str, object]]:
    """The ``(dotted.key, value)`` settings a ``tuning run --workers`` parent handed over in
    ``$TUNING_URL_SETTINGS`` (none when unset)."""
    text = os.environ.get(URL_SETTINGS_ENV, "").strip()
    if not text:
        return []
    return [(str(key), value) for key, value in json.loads(text)]


def url_settings_env(settings: Iterable[tuple[str, object]]) -> dict[str, str]:
    """The environment that hands ``settings`` to a child (empty when there are none)."""
    pairs = [[key, value] for key, value in settings]
    return {URL_SETTINGS_ENV: json.dumps(pairs)} if pairs else {}

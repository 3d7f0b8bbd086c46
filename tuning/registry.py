"""Where the MLflow store is, and the champion lookup of ``tuning status``, without MLflow.

Owns the tracking URI's resolution (``mlflow run``'s, the config's, ``$MLFLOW_TRACKING_URI``,
then ``sqlite:///mlflow.db``) and whether a store is there, which :mod:`tuning.tracking`
re-exports, and the ``@champion`` aliases read without MLflow: from a SQLite store's tables
(:func:`sqlite_champions`) or a tracking server's REST API (:func:`server_champions`). Why:
importing MLflow and opening its store costs ~2.5 s, most of ``tuning status`` on a small study
(3.9 s against 1.4 s on a 10,000-trial study with a server); a reading command asks MLflow
(:func:`tuning.tracking.champions_by_study`) only where these cannot answer (credentials or TLS
settings MLflow handles, an unknown schema, an error).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

__all__ = [
    "DEFAULT_TRACKING_URI",
    "absolute_sqlite",
    "resolve_tracking_uri",
    "server_champions",
    "sqlite_champions",
    "store_exists",
]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
CHAMPION = "champion"  # tuning.tracking.CHAMPION: the registry alias of a model's best version


def resolve_tracking_uri(configured: str | None) -> str:
    """The URI to use: ``mlflow run``'s, then the config's, then $MLFLOW_TRACKING_URI, then SQLite.

    Under ``mlflow run`` the launcher's store holds the run to adopt, so its URI wins.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if os.environ.get("MLFLOW_RUN_ID") and env:
        return absolute_sqlite(env)
    return absolute_sqlite(configured or env or DEFAULT_TRACKING_URI)


def absolute_sqlite(uri: str) -> str:
    """``sqlite:///rel.db`` -> ``sqlite:////abs/rel.db``: the file the job used, from anywhere.

    MLflow caches its SQL stores by URI, so a relative path would keep pointing at the folder
    that was current when it was first opened.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri.startswith(prefix + "/") or uri == prefix + ":memory:":
        return uri
    return prefix + str(Path(uri.removeprefix(prefix)).resolve())


def store_exists(uri: str) -> bool:
    """Whether there is a tracking store to read at ``uri``: a SQLite file that is not there
    yet is not (and looking must not create it); any other store is taken to exist."""
    return not (
        uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()
    )


def sqlite_champions(uri: str) -> dict[str, str] | None:
    """Study name -> ``MODEL vN`` of the models whose ``@champion`` came from that study, read
    from a SQLite store's registry tables (read-only); ``{}`` where there is no store yet.

    ``None`` where this cannot tell: not a SQLite store, or tables not as MLflow 3 writes them
    (the caller asks MLflow then). Models in name order, as MLflow lists them: a study that
    gave two models' champions shows the last.
    """
    if not store_exists(uri):
        return {}
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri.removeprefix("sqlite:///"))
    query = (
        "SELECT a.name, a.version, t.value FROM registered_model_aliases a"
        " JOIN model_version_tags t ON t.name = a.name AND t.version = a.version"
        "{ws} AND t.key = 'study' WHERE a.alias = ? {wa} ORDER BY a.name"
    )
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            columns = {r[1] for r in conn.execute("PRAGMA table_info(registered_model_aliases)")}
            if not columns:
                return {}  # no registry tables yet: no champion
            workspaces = "workspace" in columns
            sql = query.format(
                ws=" AND t.workspace = a.workspace" if workspaces else "",
                wa="AND a.workspace = 'default'" if workspaces else "",
            )
            rows = conn.execute(sql, (CHAMPION,)).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return {study: f"{name} v{version}" for name, version, study in rows if study}


# MLflow's own settings for reaching a server; where one is set, MLflow answers (it applies them).
_SERVER_SETTINGS = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_WORKSPACE",
)


def server_champions(uri: str, *, timeout: float = 10.0) -> dict[str, str] | None:
    """What :func:`sqlite_champions` gives, from a tracking server's REST API (MLflow 3's
    ``registered-models/search`` and ``model-versions/get``), without importing MLflow.

    ``None`` where this does not answer and MLflow should: not a plain ``http(s)://`` URI (one
    with a user or password in it included), one of MLflow's credential or TLS settings set, or
    any error (MLflow then reports it as it does).
    """
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or parts.username or parts.password:
        return None
    if any(os.environ.get(name) for name in _SERVER_SETTINGS):
        return None
    import requests

    base = uri.rstrip("/") + "/api/2.0/mlflow"
    try:
        with requests.Session() as http:
            champions: list[tuple[str, str]] = []
            token = None
            while True:
                params = {"max_results": 1000, **({"page_token": token} if token else {})}
                answer = http.get(
                    f"{base}/registered-models/search", params=params, timeout=timeout
                )
                answer.raise_for_status()
                page = answer.json()
                for model in page.get("registered_models", []):
                    for alias in model.get("aliases", []):
                        if alias.get("alias") == CHAMPION:
                            champions.append((model["name"], str(alias["version"])))
                token = page.get("next_page_token")
                if not token:
                    break
            out = {}
            for name, version in sorted(champions):  # name order, as MLflow lists them
                answer = http.get(
                    f"{base}/model-versions/get",
                    params={"name": name, "version": version},
                    timeout=timeout,
                )
                answer.raise_for_status()
                tags = answer.json()["model_version"].get("tags", [])
                study = next((t.get("value") for t in tags if t.get("key") == "study"), None)
                if study:
                    out[study] = f"{name} v{version}"
            return out
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return None

"""Where the MLflow store is, and the champion lookup of ``tuning status``, without MLflow.

Owns the tracking URI's resolution (``mlflow run``'s, the config's, ``$MLFLOW_TRACKING_URI``,
then ``sqlite:///mlflow.db``) and whether a store is there, which :mod:`tuning.tracking`
re-exports, and :func:`sqlite_champions`: the ``@champion`` aliases read from a SQLite store's
tables. Why: importing MLflow and opening its store costs ~2.5 s, most of ``tuning status`` on a
small study; a reading command asks MLflow (:func:`tuning.tracking.champions_by_study`) only
where this cannot answer (a server, an unknown schema).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

__all__ = [
    "DEFAULT_TRACKING_URI",
    "absolute_sqlite",
    "resolve_tracking_uri",
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

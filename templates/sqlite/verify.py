"""verify(email, callback): mark a user's email as verified.

callback(None, True) when a row changed, callback(None, False) when no user
has that email; callback(error) when the database fails.
"""
import sqlite


def connect_db():
    """The legacy database, opened once per worker and kept in global_."""
    db = global_.get("sqlite_db")
    if db is None or db.closed:
        db = sqlite.connect(configuration.get("DB_FILE", "legacy.db"))
        global_["sqlite_db"] = db
    return db


def verify(email, callback):
    try:
        changed = connect_db().execute(
            "UPDATE users SET email_verified = ? WHERE email = ? COLLATE NOCASE",
            [True, email],
        )
    except sqlite.DatabaseError as error:
        callback(error)
        return
    callback(None, changed > 0)

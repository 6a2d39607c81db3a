"""delete(user_id, callback): remove a user by the user_id login returned.

callback(None) whether or not the row existed (deleting twice is fine);
callback(error) when the database fails.
"""
import sqlite


def connect_db():
    """The legacy database, opened once per worker and kept in global_."""
    db = global_.get("sqlite_db")
    if db is None or db.closed:
        db = sqlite.connect(configuration.get("DB_FILE", "legacy.db"))
        global_["sqlite_db"] = db
    return db


def delete(user_id, callback):
    try:
        connect_db().execute("DELETE FROM users WHERE id = ?", [str(user_id)])
    except sqlite.DatabaseError as error:
        callback(error)
        return
    callback(None)

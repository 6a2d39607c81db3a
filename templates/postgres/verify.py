"""verify(email, callback): mark a user's email as verified.

callback(None, True) when a row changed, callback(None, False) when no user
has that email; callback(error) when the database fails.
"""
import postgres


def connect_db():
    """The legacy database, connected once per worker and kept in global_."""
    db = global_.get("postgres_db")
    if db is None or db.closed:
        db = postgres.connect("legacy")  # declared in tenant.toml ([[databases]])
        global_["postgres_db"] = db
    return db


def verify(email, callback):
    try:
        changed = connect_db().execute(
            "UPDATE users SET email_verified = %s WHERE lower(email) = lower(%s)",
            [True, email],
        )
    except postgres.DatabaseError as error:
        callback(error)
        return
    callback(None, changed > 0)

"""change_password(email, new_password, callback): store a new bcrypt hash.

callback(None, True) when the password changed, callback(None, False) when no
user has that email. The plain password is never stored or logged.
"""
import bcrypt
import postgres


def connect_db():
    """The legacy database, connected once per worker and kept in global_."""
    db = global_.get("postgres_db")
    if db is None or db.closed:
        db = postgres.connect("legacy")  # declared in tenant.toml ([[databases]])
        global_["postgres_db"] = db
    return db


def change_password(email, new_password, callback):
    hashed = bcrypt.hash(new_password, int(configuration.get("BCRYPT_ROUNDS", 10)))
    try:
        changed = connect_db().execute(
            "UPDATE users SET password = %s WHERE lower(email) = lower(%s)",
            [hashed, email],
        )
    except postgres.DatabaseError as error:
        callback(error)
        return
    callback(None, changed > 0)

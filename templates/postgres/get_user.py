"""get_user(email, callback): look a user up without a password.

Found: callback(None, profile) with the same user_id as login returns.
Not found: callback(None). Database failure: callback(error).
"""
import postgres


def connect_db():
    """The legacy database, connected once per worker and kept in global_."""
    db = global_.get("postgres_db")
    if db is None or db.closed:
        db = postgres.connect("legacy")  # declared in tenant.toml ([[databases]])
        global_["postgres_db"] = db
    return db


def get_user(email, callback):
    try:
        rows = connect_db().query(
            "SELECT id, nickname, email, email_verified FROM users WHERE lower(email) = lower(%s)",
            [email],
        )
    except postgres.DatabaseError as error:
        callback(error)
        return
    if not rows:
        callback(None)
        return
    user = rows[0]
    callback(None, {
        "user_id": str(user["id"]),
        "email": user["email"],
        "nickname": user["nickname"],
        "email_verified": bool(user["email_verified"]),
    })

"""change_email(email, new_email, verified, callback): move a user to a new email.

callback(None, True) when the email changed, callback(None, False) when no
user has ``email``; the new address taken: callback(ValidationError("user_exists", ...)).
"""
import sqlite


def connect_db():
    """The legacy database, opened once per worker and kept in global_."""
    db = global_.get("sqlite_db")
    if db is None or db.closed:
        db = sqlite.connect(configuration.get("DB_FILE", "legacy.db"))
        global_["sqlite_db"] = db
    return db


def change_email(email, new_email, verified, callback):
    try:
        changed = connect_db().execute(
            "UPDATE users SET email = ?, email_verified = ? WHERE email = ? COLLATE NOCASE",
            [new_email, bool(verified), email],
        )
    except sqlite.DuplicateKey:
        callback(ValidationError("user_exists", "Another user already has this email."))
        return
    except sqlite.DatabaseError as error:
        callback(error)
        return
    callback(None, changed > 0)

"""change_email(email, new_email, verified, callback): move a user to a new email.

callback(None, True) when the email changed, callback(None, False) when no
user has ``email``; the new address taken: callback(ValidationError("user_exists", ...)).
"""
import mysql


def connect_db():
    """The legacy database, connected once per worker and kept in global_."""
    db = global_.get("mysql_db")
    if db is None or db.closed:
        db = mysql.connect("legacy")  # declared in tenant.toml ([[databases]])
        global_["mysql_db"] = db
    return db


def change_email(email, new_email, verified, callback):
    try:
        changed = connect_db().execute(
            "UPDATE users SET email = %s, email_verified = %s WHERE email = %s",
            [new_email, bool(verified), email],
        )
    except mysql.DuplicateKey:
        callback(ValidationError("user_exists", "Another user already has this email."))
        return
    except mysql.DatabaseError as error:
        callback(error)
        return
    callback(None, changed > 0)

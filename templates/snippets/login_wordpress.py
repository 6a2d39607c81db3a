"""login(email, password, callback) against a WordPress wp_users table.

A variant of templates/sqlite/login.py for a legacy WordPress site:
``user_pass`` holds a phpass portable hash (``$P$B...``, cost 8), or, since
WordPress 6.8, ``$wp$2y$...`` (bcrypt of a base64 HMAC-SHA384 of the password;
handled below), or a bare MD5 digest left by very old imports.  The
``user_login`` name logs in as well as the email.
"""
import base64
import hmac
import passwords
import sqlite


def connect_db():
    db = global_.get("sqlite_db")
    if db is None or db.closed:
        db = sqlite.connect(configuration.get("DB_FILE", "legacy.db"))
        global_["sqlite_db"] = db
    return db


def check_wordpress(password, stored):
    if stored.startswith("$wp$"):  # WordPress >= 6.8: bcrypt over a pre-hash
        prehash = base64.b64encode(hmac.digest("wp-sha384", password, "sha384")).decode("ascii")
        return passwords.verify(prehash, stored[3:])
    if len(stored) == 32:  # an unsalted MD5 from a pre-2.5 import
        return passwords.verify(password, stored, "hex_md5")
    return passwords.verify(password, stored)


def login(email, password, callback):
    try:
        rows = connect_db().query(
            "SELECT ID, user_login, user_email, user_pass, display_name FROM wp_users "
            "WHERE user_email = ? OR user_login = ?",
            [email, email],
        )
    except sqlite.DatabaseError as error:
        callback(error)
        return
    if not rows:
        callback(WrongUsernameOrPasswordError(None, "Wrong email or password."))
        return
    user = rows[0]
    if not check_wordpress(password, user["user_pass"]):
        callback(WrongUsernameOrPasswordError(email, "Wrong email or password."))
        return
    callback(None, {
        "user_id": str(user["ID"]),
        "email": user["user_email"],
        "username": user["user_login"],
        "nickname": user["display_name"] or user["user_login"],
        "email_verified": True,
    })

"""login(email, password, callback) against a Django project's auth_user table.

A variant of templates/sqlite/login.py for a legacy Django site: the table is
``auth_user`` and ``password`` holds Django's ``algorithm$...`` string
(pbkdf2_sha256 by default; argon2, bcrypt_sha256, scrypt and pbkdf2_sha1 if
the site changed PASSWORD_HASHERS).  ``passwords.verify`` recognises each
from the string itself.  Django's ``!``-prefixed "unusable" passwords never
verify.  Swap ``sqlite`` for ``postgres`` or ``mysql`` (and ``?`` for the
driver's placeholder) when the site's database is one of those.
"""
import passwords
import sqlite


def connect_db():
    db = global_.get("sqlite_db")
    if db is None or db.closed:
        db = sqlite.connect(configuration.get("DB_FILE", "legacy.db"))
        global_["sqlite_db"] = db
    return db


def login(email, password, callback):
    try:
        rows = connect_db().query(
            "SELECT id, username, email, password, first_name, is_active FROM auth_user "
            "WHERE lower(email) = lower(?)",
            [email],
        )
    except sqlite.DatabaseError as error:
        callback(error)
        return
    if not rows or not rows[0]["is_active"]:
        callback(WrongUsernameOrPasswordError(None, "Wrong email or password."))
        return
    user = rows[0]
    try:
        ok = passwords.verify(password, user["password"])
    except passwords.HashTooExpensive as error:  # a row over the tenant's cost caps
        callback(error)
        return
    if not ok:
        callback(WrongUsernameOrPasswordError(email, "Wrong email or password."))
        return
    callback(None, {
        "user_id": str(user["id"]),
        "email": user["email"],
        "username": user["username"],
        "nickname": user["first_name"] or user["username"],
        "email_verified": True,
    })

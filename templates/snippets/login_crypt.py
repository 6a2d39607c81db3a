"""login(email, password, callback) against a table of crypt(3) hashes.

A variant of templates/sqlite/login.py for users exported from a Unix
``/etc/shadow``, an LDAP directory or an Apache htpasswd file into a
``accounts(uid, mail, cn, hash)`` table: ``hash`` holds ``$6$`` (SHA512-crypt),
``$5$``, ``$1$`` (MD5-crypt), ``$apr1$``, ``$2y$`` or an LDAP
``{SSHA}``/``{CRYPT}$6$...`` value.  Locked shadow entries (``!`` or ``*``)
never verify.
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
        rows = connect_db().query("SELECT uid, mail, cn, hash FROM accounts WHERE mail = ?", [email])
    except sqlite.DatabaseError as error:
        callback(error)
        return
    if not rows:
        callback(WrongUsernameOrPasswordError(None, "Wrong email or password."))
        return
    user = rows[0]
    if user["hash"][:1] in ("!", "*") or not passwords.verify(password, user["hash"]):
        callback(WrongUsernameOrPasswordError(email, "Wrong email or password."))
        return
    callback(None, {
        "user_id": str(user["uid"]),
        "email": user["mail"],
        "nickname": user["cn"],
        "email_verified": True,
    })

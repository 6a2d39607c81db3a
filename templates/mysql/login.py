"""login(email, password, callback): check a password against the legacy users table.

Success: callback(None, profile). Unknown email or wrong password:
callback(WrongUsernameOrPasswordError(...)); with the email when the user exists
(wrong password), without it when nobody has that email. Database failure:
callback(error).

An unknown email still costs one bcrypt check (against a fixed hash of the
same cost), so the answer's timing does not tell who has an account.
"""
import bcrypt
import mysql


def connect_db():
    """The legacy database, connected once per worker and kept in global_."""
    db = global_.get("mysql_db")
    if db is None or db.closed:
        db = mysql.connect("legacy")  # declared in tenant.toml ([[databases]])
        global_["mysql_db"] = db
    return db


def dummy_hash():
    """A bcrypt hash of no user's password at this connection's cost (made once per worker)."""
    rounds = int(configuration.get("BCRYPT_ROUNDS", 10))
    key = "dummy_hash_" + str(rounds)
    if key not in global_:
        global_[key] = bcrypt.hash("no such user: a fixed dummy password", rounds)
    return global_[key]


def login(email, password, callback):
    try:
        rows = connect_db().query(
            "SELECT id, nickname, email, email_verified, password FROM users WHERE email = %s",
            [email],
        )
    except mysql.DatabaseError as error:
        callback(error)
        return
    if not rows:
        bcrypt.check(password, dummy_hash())  # same cost as a wrong password: no timing oracle
        callback(WrongUsernameOrPasswordError(None, "Wrong email or password."))
        return
    user = rows[0]
    if not bcrypt.check(password, user["password"]):
        callback(WrongUsernameOrPasswordError(email, "Wrong email or password."))
        return
    callback(None, {
        "user_id": str(user["id"]),
        "email": user["email"],
        "nickname": user["nickname"],
        "email_verified": bool(user["email_verified"]),
    })

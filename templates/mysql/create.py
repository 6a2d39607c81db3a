"""create(user, callback): sign a new user up in the legacy users table.

``user`` holds email, password (plain text: hashed here, never stored or
logged), and optionally nickname and username. Success: callback(None).
Email (or username) taken: callback(ValidationError("user_exists", ...)).
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


def create(user, callback):
    email = user["email"]
    hashed = bcrypt.hash(user["password"], int(configuration.get("BCRYPT_ROUNDS", 10)))
    nickname = user.get("nickname") or email.split("@")[0]
    try:
        connect_db().execute(
            "INSERT INTO users (email, password, nickname, username) VALUES (%s, %s, %s, %s)",
            [email, hashed, nickname, user.get("username")],
        )
    except mysql.DuplicateKey:
        callback(ValidationError("user_exists", "A user with this email already exists."))
        return
    except mysql.DatabaseError as error:
        callback(error)
        return
    callback(None)

"""delete(user_id, callback): remove a user by the user_id login returned.

callback(None) whether or not the row existed (deleting twice is fine);
callback(error) when the database fails.
"""
import mysql


def connect_db():
    """The legacy database, connected once per worker and kept in global_."""
    db = global_.get("mysql_db")
    if db is None or db.closed:
        db = mysql.connect("legacy")  # declared in tenant.toml ([[databases]])
        global_["mysql_db"] = db
    return db


def delete(user_id, callback):
    try:
        connect_db().execute("DELETE FROM users WHERE id = %s", [str(user_id)])
    except mysql.DatabaseError as error:
        callback(error)
        return
    callback(None)

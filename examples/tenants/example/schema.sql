-- The legacy users table the sqlite templates expect (file: data/legacy.db).
-- password holds a bcrypt hash ($2a$/$2b$/$2y$), never the plain password.
CREATE TABLE IF NOT EXISTS users (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,  -- user_id returned to the platform (as text)
    email          TEXT    NOT NULL UNIQUE,
    password       TEXT    NOT NULL,                   -- bcrypt hash
    nickname       TEXT,
    email_verified INTEGER NOT NULL DEFAULT 0,         -- 0 / 1
    username       TEXT    UNIQUE                      -- optional
);

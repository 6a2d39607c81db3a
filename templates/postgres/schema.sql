-- The legacy users table the postgres templates expect (database: DB_NAME).
-- password holds a bcrypt hash ($2a$/$2b$/$2y$), never the plain password.
CREATE TABLE IF NOT EXISTS users (
    id             SERIAL  PRIMARY KEY,                -- user_id returned to the platform (as text)
    email          TEXT    NOT NULL UNIQUE,
    password       TEXT    NOT NULL,                   -- bcrypt hash
    nickname       TEXT,
    email_verified BOOLEAN NOT NULL DEFAULT FALSE,
    username       TEXT    UNIQUE                      -- optional
);

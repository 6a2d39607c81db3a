-- The legacy users table the mysql templates expect (database: DB_NAME).
-- password holds a bcrypt hash ($2a$/$2b$/$2y$), never the plain password.
CREATE TABLE IF NOT EXISTS users (
    id             INT          AUTO_INCREMENT PRIMARY KEY,  -- user_id returned to the platform (as text)
    email          VARCHAR(254) NOT NULL UNIQUE,
    password       VARCHAR(100) NOT NULL,                    -- bcrypt hash
    nickname       VARCHAR(100),
    email_verified BOOLEAN      NOT NULL DEFAULT FALSE,
    username       VARCHAR(100) UNIQUE                       -- optional
) CHARACTER SET utf8mb4;

-- Sign-up codes (internal/signupcodes/pgcodes): uses left, by the code's
-- SHA-256 (the code itself is only in the invites). A code used up has no
-- row.

-- +goose Up
CREATE TABLE signup_codes (
	hash bytea   NOT NULL PRIMARY KEY,
	uses integer NOT NULL CHECK (uses >= 0)
);

-- +goose Down
DROP TABLE signup_codes;

-- kubeoauth:migration kind=expand
-- A user who signs in through the upstream OpenID provider is in no users file: what
-- the provider said of them (name, email, groups) is kept with their sign-in session,
-- as JSON, until the session ends. NULL for a user of the users file. A token server
-- of schema 5 neither writes nor reads the column.

ALTER TABLE sign_in_sessions ADD COLUMN IF NOT EXISTS identity jsonb;

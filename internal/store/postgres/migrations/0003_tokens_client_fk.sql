-- kubeoauth:migration kind=expand transaction=false
-- Tokens belong to a client: a foreign key with ON DELETE CASCADE, so that no replica
-- can store a token for a client another replica has just deleted (its cached copy of
-- the client notwithstanding), and deleting a client takes its tokens in the same
-- statement. Added NOT VALID, which is quick, then validated, which reads the table
-- without blocking writes; each statement runs on its own so that no lock is held
-- across them. Tokens of clients deleted before (a race this closes) go first.

SET lock_timeout = '10s';
ALTER TABLE tokens DROP CONSTRAINT IF EXISTS tokens_client_id_fkey;
ALTER TABLE tokens ADD CONSTRAINT tokens_client_id_fkey
    FOREIGN KEY (client_id) REFERENCES clients (id) ON DELETE CASCADE NOT VALID;
RESET lock_timeout;
DELETE FROM tokens t WHERE NOT EXISTS (SELECT 1 FROM clients c WHERE c.id = t.client_id);
ALTER TABLE tokens VALIDATE CONSTRAINT tokens_client_id_fkey;

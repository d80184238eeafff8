-- kubeoauth:migration kind=expand
-- Room on each tokens page for the new version of a refresh token that rotates, so
-- that the rotation's UPDATE is a heap-only tuple update: no new entry in any of the
-- table's five indexes. Takes effect on pages filled from now on; the lock (SHARE
-- UPDATE EXCLUSIVE) does not conflict with token writes.

ALTER TABLE tokens SET (fillfactor = 80);

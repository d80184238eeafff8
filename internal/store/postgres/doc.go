// Package postgres is the token server's store on PostgreSQL (github.com/lib/pq):
// clients, consent grants, fosite's token storage and the event log, with embedded
// expand/contract/breaking migrations (breaking ones with row transforms), the
// LISTEN/NOTIFY that keeps every replica's caches in step (Follow), and the change
// capture a Copy upgrade replays from (InstallCapture). Tokens are kept by signature, never raw; client secrets
// only as hashes; every query names its columns, so two versions can share a schema
// during a blue-green upgrade.
package postgres

// Package tokenserver is the bundled authorization server's HTTP side: the public
// OAuth 2.0 / OpenID Connect endpoints (through internal/oauth), the admin API the
// operator drives (internal/adminapi), health, metrics, the event-log long poll woken
// by PostgreSQL LISTEN/NOTIFY, and the janitor.
package tokenserver

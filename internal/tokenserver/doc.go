// Package tokenserver is the bundled authorization server's HTTP side: the public
// OAuth 2.0 / OpenID Connect endpoints (through internal/oauth), the admin API the
// operator drives (internal/adminapi, converted to the store's types in adminconv.go),
// health, metrics, the event-log long poll woken through the store's Follow, and the
// janitor.
package tokenserver

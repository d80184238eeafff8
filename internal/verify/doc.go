// Package verify checks, before a blue-green upgrade moves any traffic, that the new
// token server (green) works and that it and the serving one (blue) understand each
// other's tokens: both run on one database, and during promotion and after a rollback
// a token issued by one is used on the other. It is what `tokenserver verify`, the
// upgrade's verification Job, runs; its only tools are the public OAuth endpoints and
// the admin API, so it checks what a client would see.
package verify

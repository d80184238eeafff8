// Package pages holds the token server's HTML pages: the built-in templates, the
// data every template receives (Data), and the overlay of a TokenServer's own
// templates on the built-in ones. It stands apart from internal/tokenserver so that
// the operator checks a TokenServer's templates exactly as the server will run them,
// without linking the server.
package pages

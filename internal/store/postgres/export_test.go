package postgres

// ParseMigrations is parseMigrations, for tests of the file rules.
var ParseMigrations = parseMigrations

// AfterClientRead makes GetClientByID call f after reading a client from the database
// and before caching it.
func AfterClientRead(s *Store, f func(id string)) { s.testHooks.afterClientRead = f }

// AfterTokenRead makes access-token lookups call f after reading a token from the
// database and before caching it.
func AfterTokenRead(s *Store, f func(signature string)) { s.testHooks.afterTokenRead = f }

// TokenCacheTTL is tokenCacheTTL, for the staleness-bound test.
const TokenCacheTTL = tokenCacheTTL

// LoadMigrations is Migrations returning its error instead of panicking.
var LoadMigrations = loadMigrations

package postgres

// ParseMigrations is parseMigrations, for tests of the file rules.
var ParseMigrations = parseMigrations

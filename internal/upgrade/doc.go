// Package upgrade decides a TokenServer's blue-green upgrade: Next(observed, now)
// returns what to write to status and what to do, and nothing here reads the
// cluster or the clock. It is pure so that every transition, a restart at every
// phase and a failure at every phase can be tested as tables, and so that a
// controller that crashes between writing the intent and acting on it resumes: the
// same facts give the same decision, and every action is safe alone.
package upgrade

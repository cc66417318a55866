// Package winacl sets Windows access lists on test files (Set, Windows
// only), for the tests of the agent's key and password file checks.
package winacl

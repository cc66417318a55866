package migrate

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
)

// The terraform module names Google resources after each account: the
// store's service account "<resource_prefix>-<id>" and the credential secret
// "<resource_prefix>-<id>-sa-key" (key) or "<resource_prefix>-<id>-user-token"
// (authorized_user). Account names follow the broker's rule (up to 63
// letters, digits, '_', '.', '-'), service account ids do not (6-30 lower
// case letters, digits and '-'), so the module derives <id> from the name
// with the rule below; ResourceID is the same rule in Go, and
// terraform/tests/naming_vectors.json holds the examples both are tested
// against.

// legacyAccountName is the module's former rule for account names. Such a
// name is its own id, so deployments made before the rule was widened keep
// their resource ids.
var legacyAccountName = regexp.MustCompile(`^[a-z][a-z0-9-]{1,18}[a-z0-9]$`)

// idStemLen is how much of the normalised name an id keeps before the hash:
// stem (11) + "-" + hash (8) = 20, the longest legacy name, so any
// resource_prefix (at most 8) still gives a service account id of at most 30.
const idStemLen = 11

// ResourceID is the id the terraform module derives from an account name.
// A name the module always accepted (3-20 lower-case letters, digits and
// '-', starting with a letter) is kept as it is. Any other name becomes its
// first 11 characters in lower case with '_' and '.' mapped to '-' (trailing
// '-' dropped), then '-' and the first 8 hex digits of the SHA-256 of the
// name as written: "My.Store" and "my_store" both normalise to "my-store"
// but get different hashes, and neither can take the id of an account
// literally called "my-store".
func ResourceID(name string) string {
	if legacyAccountName.MatchString(name) {
		return name
	}
	stem := strings.NewReplacer("_", "-", ".", "-").Replace(strings.ToLower(name))
	if len(stem) > idStemLen {
		stem = stem[:idStemLen]
	}
	stem = strings.TrimRight(stem, "-")
	sum := sha256.Sum256([]byte(name))
	return stem + "-" + hex.EncodeToString(sum[:])[:8]
}

// secretSuffix is the module's suffix of a credential secret id per mode.
func secretSuffix(mode string) string {
	if mode == modeKey {
		return "-sa-key"
	}
	return "-user-token"
}

// SecretID is the id of the credential secret the module creates for an
// account of the given mode ("key" or "authorized_user").
func SecretID(resourcePrefix, name, mode string) string {
	return resourcePrefix + "-" + ResourceID(name) + secretSuffix(mode)
}

package keys

import (
	"crypto"
	"crypto/ed25519"
	"strconv"
	"strings"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/tpmkey"
)

// PolicyMember is the agent's member of the broker policy's "Agents"
// object, on one line: with one key the classic "PublicKey", with two (a
// rotation under way, the old key first) "PublicKeys". id and accounts
// must have passed the broker's rules and publics be policy lines, so that
// nothing needs escaping beyond JSON's quotes.
func PolicyMember(id string, publics, accounts []string) string {
	q := make([]string, len(accounts))
	for i, a := range accounts {
		q[i] = strconv.Quote(a)
	}
	list := "[" + strings.Join(q, ", ") + "]"
	keyField := `"PublicKey": `
	if len(publics) == 1 {
		keyField += strconv.Quote(publics[0])
	} else {
		p := make([]string, len(publics))
		for i, s := range publics {
			p[i] = strconv.Quote(s)
		}
		keyField = `"PublicKeys": [` + strings.Join(p, ", ") + "]"
	}
	return strconv.Quote(id) + ": {" + keyField + `, "Accounts": ` + list + "}"
}

// FromSigner describes a signer that did not come from Load (a test's or
// a hand-built configuration's): its kind from its type, its policy line
// from its public key ("" if it has none).
func FromSigner(s crypto.Signer) *Key {
	k := &Key{Signer: s}
	switch s.(type) {
	case ed25519.PrivateKey:
		k.Kind = KindFile
	case *tpmkey.Key:
		k.Kind = KindTPM
	}
	if s != nil {
		k.Public, _ = agentkey.FormatPublic(s.Public())
	}
	return k
}

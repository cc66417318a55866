package fakegcp

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Cloud is every fake, started together and sharing one TokenServer.
type Cloud struct {
	Tokens        *TokenServer
	SecretManager *SecretManager
	IAM           *IAMCredentials
	Metadata      *Metadata
	DICOMweb      *DICOMwebFront
	Storage       *Storage

	clockMu sync.Mutex
	offset  time.Duration
}

// Addrs are the listen addresses of the fakes; "" means "127.0.0.1:0".
type Addrs struct {
	Token         string
	SecretManager string
	IAM           string
	Metadata      string
	DICOMweb      string
	Storage       string
}

// StartCloud starts all fakes on 127.0.0.1 ephemeral ports; the metadata server's
// identity is brokerEmail in projectID.
func StartCloud(brokerEmail, projectID string) (*Cloud, error) {
	return StartCloudOn(Addrs{}, brokerEmail, projectID, nil)
}

// StartCloudOn is StartCloud with chosen listen addresses and a logger (nil: quiet).
func StartCloudOn(a Addrs, brokerEmail, projectID string, log *slog.Logger) (*Cloud, error) {
	if brokerEmail == "" || projectID == "" {
		return nil, errors.New("fakegcp: StartCloud needs the broker's email and the project id")
	}
	tokens := NewTokenServer()
	c := &Cloud{
		Tokens:        tokens,
		SecretManager: NewSecretManager(),
		IAM:           NewIAMCredentials(tokens),
		Metadata:      NewMetadata(tokens, brokerEmail, projectID),
		DICOMweb:      NewDICOMwebFront(tokens),
		Storage:       NewStorage(),
	}
	if log != nil {
		c.Tokens.SetLogger(log)
		c.SecretManager.SetLogger(log)
		c.IAM.SetLogger(log)
		c.Metadata.SetLogger(log)
		c.DICOMweb.SetLogger(log)
	}
	starts := []struct {
		name  string
		addr  string
		start func(string) error
	}{
		{"token server", a.Token, c.Tokens.Start},
		{"secret manager", a.SecretManager, c.SecretManager.Start},
		{"iam credentials", a.IAM, c.IAM.Start},
		{"metadata", a.Metadata, c.Metadata.Start},
		{"dicomweb front", a.DICOMweb, c.DICOMweb.Start},
		{"cloud storage", a.Storage, c.Storage.Start},
	}
	for _, s := range starts {
		if err := s.start(s.addr); err != nil {
			c.Close()
			return nil, fmt.Errorf("fakegcp: start %s on %q: %w", s.name, s.addr, err)
		}
	}
	return c, nil
}

// AdvanceClock moves the clock of the token server (hence of every expiry check) and of
// Secret Manager forward by d from now on; it adds up across calls.
func (c *Cloud) AdvanceClock(d time.Duration) time.Duration {
	c.clockMu.Lock()
	defer c.clockMu.Unlock()
	c.offset += d
	off := c.offset
	now := func() time.Time { return time.Now().Add(off) }
	c.Tokens.SetNow(now)
	c.SecretManager.SetNow(now)
	return off
}

// Close stops every fake.
func (c *Cloud) Close() {
	c.Storage.Close()
	_ = c.DICOMweb.Close()
	_ = c.Metadata.Close()
	_ = c.IAM.Close()
	c.SecretManager.Close()
	_ = c.Tokens.Close()
}

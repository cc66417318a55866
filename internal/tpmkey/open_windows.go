package tpmkey

import (
	"errors"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/windowstpm"
)

// DefaultDevice is empty on Windows: the TPM is reached through the TPM
// Base Services (TBS), not a device path.
const DefaultDevice = ""

// DeviceName is device as messages name it.
func DeviceName(device string) string {
	if device == "" {
		return "(TBS)"
	}
	return device
}

// openDevice opens the TPM through TBS (tbs.dll). There is no device path
// on Windows: anything but "" is refused.
func openDevice(device string) (transport.TPMCloser, error) {
	if device != "" {
		return nil, errors.New("on Windows the TPM is reached through TBS; leave the TPM device unset")
	}
	return windowstpm.Open()
}

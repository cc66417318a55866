//go:build !windows

package tpmkey

import (
	"os"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"
)

// DefaultDevice is the kernel's TPM resource manager: it lets several
// programs use the TPM at once and flushes what a closed one left behind.
const DefaultDevice = "/dev/tpmrm0"

// DeviceName is device as messages name it ("" is DefaultDevice).
func DeviceName(device string) string {
	if device == "" {
		return DefaultDevice
	}
	return device
}

// openDevice opens a TPM character device (/dev/tpmrm0, /dev/tpm0) or, for
// a path that is a Unix socket, a TPM simulator's command socket such as
// swtpm's (swtpm socket --tpm2 --server type=unixio,path=…).
func openDevice(device string) (transport.TPMCloser, error) {
	path := DeviceName(device)
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode()&os.ModeSocket != 0 {
		return linuxudstpm.Open(path)
	}
	return linuxtpm.Open(path)
}

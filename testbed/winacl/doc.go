// Package winacl sets Windows access lists on test files (Set, SetKept;
// Windows only), for the tests of the agent's key and password file checks.
package winacl

// Dropped is the reason a test skips when SetKept reports that the file
// system did not keep an entry (wine).
const Dropped = "this file system does not keep a DACL entry for this trustee (wine keeps a file's DACL only as " +
	"Unix mode bits: SYSTEM, the owner, Everyone); the same check runs on security descriptors " +
	"in internal/agentkey's TestDescriptorACLWindows"

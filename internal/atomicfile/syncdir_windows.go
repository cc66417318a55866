package atomicfile

// SyncDir does nothing on Windows and returns nil: there is no directory
// flush there. FlushFileBuffers (what File.Sync calls) needs a handle with
// write access, and a directory opened with os.Open has none, so it fails
// with "Access denied" (which made migrate and the key rotation fail on
// Windows). It is not needed either: the callers flush each file's data
// before renaming it (File.Sync), and a rename within a volume
// (os.Rename: MoveFileEx with MOVEFILE_REPLACE_EXISTING) is an NTFS
// metadata change recorded in NTFS's own journal, so after a crash the
// name leads to the old complete content or the new, never to half of one.
// MOVEFILE_WRITE_THROUGH would add nothing: it only flushes a move done as
// a copy and a delete (across volumes), which these renames, always within
// one directory's volume, never are.
func SyncDir(dir string) error { return nil }

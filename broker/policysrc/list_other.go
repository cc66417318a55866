//go:build !linux

package policysrc

func listDir(dir string) ([]Object, error) { return listDirPortable(dir) }

func readFile(path string, _ int64) ([]byte, error) { return readFilePortable(path) }

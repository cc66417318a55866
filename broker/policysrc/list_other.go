//go:build !linux

package policysrc

func listDir(dir string) ([]Object, error) { return listDirPortable(dir) }

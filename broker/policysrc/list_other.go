//go:build !linux

package policysrc

func listDir(dir string) ([]Object, error) { return listDirPortable(dir) }

func readFile(path string, _ int64) ([]byte, error) { return readFilePortable(path) }

func readFiles(_ string, objs []Object, each func(i int, data []byte, err error)) {
	for i, o := range objs {
		data, err := readFilePortable(o.Name)
		each(i, data, err)
	}
}

package nodeagent

import "syscall"

// statfs reads the sizes of the filesystem holding path.
func statfs(path string) (fsStats, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return fsStats{}, err
	}
	bs := int64(st.Bsize)
	return fsStats{
		capacity:   int64(st.Blocks) * bs,
		available:  int64(st.Bavail) * bs,
		inodes:     int64(st.Files),
		inodesFree: int64(st.Ffree),
	}, nil
}

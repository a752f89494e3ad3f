package vulndb

import (
	"os"
	"syscall"
)

// sysID adds the change time, inode and device of the file to id.
func sysID(fi os.FileInfo, id *fileID) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ctime = st.Ctim.Nano()
		id.ino = int64(st.Ino)
		id.dev = int64(st.Dev)
	}
}

package fs

import "golang.org/x/sys/unix"

// Crash stops serving m as a killed process would: its descriptor of the
// connection closed at once (replaced by /dev/null, which the requests it
// was handling reply to), those requests never answered.
func (m *Mount) Crash() {
	s := m.srv
	s.stopping.Store(true)
	var one [8]byte
	one[0] = 1
	unix.Write(s.stop, one[:])
	null, err := unix.Open("/dev/null", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		panic(err)
	}
	unix.Dup3(null, s.fd, unix.O_CLOEXEC)
	unix.Close(null)
}

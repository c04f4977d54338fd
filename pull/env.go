package pull

// Where a pull goes when nothing says otherwise: containerd's socket and
// namespace, as ctr takes them.
const (
	DefaultAddress   = "/run/containerd/containerd.sock"
	DefaultNamespace = "default"
)

// Env returns the containerd socket and namespace ctr would use:
// $CONTAINERD_ADDRESS and $CONTAINERD_NAMESPACE, else DefaultAddress and
// DefaultNamespace. getenv is os.Getenv (a parameter, so that the
// package reads no process state itself).
func Env(getenv func(string) string) (address, namespace string) {
	address, namespace = getenv("CONTAINERD_ADDRESS"), getenv("CONTAINERD_NAMESPACE")
	if address == "" {
		address = DefaultAddress
	}
	if namespace == "" {
		namespace = DefaultNamespace
	}
	return address, namespace
}

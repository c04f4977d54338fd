// Package config is lazysnap's configuration file (/etc/lazysnap/config.toml,
// dist/config.toml shows every key): the keys and their defaults, strict
// decoding (an unknown key or a value of the wrong type is an error naming
// the file and the key: internal/tomlconfig), and the values derived or
// checked across keys (the status and fuse manager sockets, the CRI image
// service's address: ErrInvalid when they do not go together). A Config
// is plain data; the daemons turn it into their components' options.
package config

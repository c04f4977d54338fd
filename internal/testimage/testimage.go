// Package testimage builds small OCI images for tests: gzip-compressed tar
// layers, a config and a manifest, written as an OCI image layout directory
// or as a tar archive of one that `ctr images import` accepts.
package testimage

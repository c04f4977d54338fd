package credprovider

import (
	"strings"
	"testing"

	cpv1 "k8s.io/kubelet/pkg/apis/credentialprovider/v1"
)

// Seeds: testdata/fuzz/<FuzzName>/ plus the f.Add calls below.

// FuzzParseResponse feeds arbitrary plugin output to the answer's parser
// and picks a credential for an arbitrary image from what it accepts: no
// panic, an accepted answer has a known cacheKeyType, and no error quotes
// a password of the answer.
func FuzzParseResponse(f *testing.F) {
	const v1 = "credentialprovider.kubelet.k8s.io/v1"
	for _, s := range []string{
		`{"apiVersion":"` + v1 + `","kind":"CredentialProviderResponse","cacheKeyType":"Registry","cacheDuration":"5m","auth":{"reg.example.com:5000":{"username":"u","password":"password-1"}}}`,
		`{"apiVersion":"` + v1 + `","kind":"CredentialProviderResponse","cacheKeyType":"Image","auth":{"*.example.com/team":{"username":"u","password":"password-2"},"[::1":{"password":"x"}}}`,
		`{"apiVersion":"` + v1 + `","kind":"CredentialProviderResponse","cacheKeyType":"Pod"}`,
		`{"apiVersion":"` + v1 + `","kind":"CredentialProviderResponse","cacheKeyType":"Global","cacheDuration":"-1s"}`,
		`{"apiVersion":"v2","kind":"CredentialProviderResponse","cacheKeyType":"Global","auth":{"x":{"password":"secret-in-wrong-version"}}}`,
		`{"auth":{"a":{"password":"unterminated`,
		``,
	} {
		f.Add([]byte(s), "reg.example.com:5000/team/app:v1")
	}
	f.Fuzz(func(t *testing.T, out []byte, image string) {
		resp, err := parseResponse(out, v1)
		if err != nil {
			for _, a := range resp.Auth {
				if len(a.Password) >= 8 && strings.Contains(err.Error(), a.Password) {
					t.Fatalf("error %q quotes the password %q", err, a.Password)
				}
			}
			return
		}
		switch resp.CacheKeyType {
		case cpv1.ImagePluginCacheKeyType, cpv1.RegistryPluginCacheKeyType, cpv1.GlobalPluginCacheKeyType:
		default:
			t.Fatalf("accepted cacheKeyType %q", resp.CacheKeyType)
		}
		if a, ok := pick(resp.Auth, image); ok {
			matched := false
			for k, v := range resp.Auth {
				m, _ := urlsMatch(k, image)
				matched = matched || m && v == a
			}
			if !matched {
				t.Fatalf("picked %+v, which no key matching %q holds", a, image)
			}
		}
	})
}

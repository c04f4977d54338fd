package fetcher

import (
	"context"
	"errors"
	"net/http"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"
)

// maxAuthRounds bounds 401 -> authorizer -> resend rounds per request.
const maxAuthRounds = 3

// authTransport adds a host's credentials to every request it sends (each
// hop of a redirect chain goes through it) and answers the registry's
// auth challenge: on a 401 it hands the responses so far to the
// authorizer (which fetches a token or picks fresh credentials) and sends
// the request again, at most maxAuthRounds times; the next 401 is
// returned to the caller. A request marked with skipChallenge (a cached
// storage URL, whose 401 means it has expired) gets credentials but its
// 401 is passed through.
//
// Errors are *attemptError of kind ErrUnauthorized (the authorizer failed
// or has no credentials for the challenge), or the request context's
// error when it ended meanwhile.
type authTransport struct {
	auth docker.Authorizer
	next http.RoundTripper
}

// skipChallengeKey marks a request whose 401 authTransport passes through.
type skipChallengeKey struct{}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	skip := ctx.Value(skipChallengeKey{}) != nil
	resendable := req.Body == nil || req.Body == http.NoBody
	var responses []*http.Response
	for rounds := 0; ; rounds++ {
		r := req.Clone(ctx) // Authorize sets headers: not on the caller's request
		if err := t.authorize(ctx, r); err != nil {
			return nil, err
		}
		resp, err := t.next.RoundTrip(r)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusUnauthorized || skip || !resendable || rounds >= maxAuthRounds {
			return resp, nil
		}
		drainClose(resp)
		responses = append(responses, resp)
		if err := t.auth.AddResponses(ctx, responses); err != nil {
			if errdefs.IsNotImplemented(err) {
				return nil, attemptErr(ErrUnauthorized, resp.StatusCode, errors.New("no credentials for the registry's auth challenge"))
			}
			return nil, attemptErr(ErrUnauthorized, resp.StatusCode, err)
		}
	}
}

func (t *authTransport) authorize(ctx context.Context, req *http.Request) error {
	if err := t.auth.Authorize(ctx, req); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return attemptErr(ErrUnauthorized, 0, err)
	}
	return nil
}

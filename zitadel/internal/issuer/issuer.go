// Package issuer checks Zitadel issuer URLs.
package issuer

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Parse checks that raw is an absolute http(s) URL without query or
// fragment and returns it without a trailing slash. Plain http is refused
// unless insecure is set (tests, local development).
func Parse(raw string, insecure bool) (string, *url.URL, error) {
	if raw == "" {
		return "", nil, errors.New("issuer URL is required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the input; say only that it is malformed.
		return "", nil, errors.New("issuer is not a valid URL")
	}
	if u.User != nil {
		return "", nil, fmt.Errorf("issuer %q must not carry credentials", u.Redacted())
	}
	if u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", nil, fmt.Errorf("issuer %q must be a plain absolute URL", raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !insecure {
			return "", nil, fmt.Errorf("issuer %q uses plain http; set Insecure to allow it", raw)
		}
	default:
		return "", nil, fmt.Errorf("issuer %q must use https", raw)
	}
	s := strings.TrimSuffix(u.String(), "/")
	return s, u, nil
}

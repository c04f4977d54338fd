// Package tomlconfig decodes lazysnap's TOML configuration strictly: a key
// the configuration does not have is an error naming it and its line, not
// a setting silently ignored; a value of the wrong type names its key.
// Duration is a config value written as a Go duration ("30s").
package tomlconfig

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// DecodeFile decodes the file at path into v, strictly; errors name the
// file.
func DecodeFile(path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := toml.NewDecoder(f).DisallowUnknownFields().Decode(v); err != nil {
		return fmt.Errorf("config %s: %w", path, configError(err))
	}
	return nil
}

// Duration is a time.Duration written as a string ("2m", "-1s"); unset is
// 0.
type Duration time.Duration

// UnmarshalText parses a Go duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// D is the duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// configError names the keys and lines go-toml v2 keeps out of its
// errors' messages: an unknown key is "unknown key fetch.no_prefetc (line 2)"
// rather than "strict mode: fields in the document are missing in the target
// struct".
func configError(err error) error {
	var missing *toml.StrictMissingError
	if errors.As(err, &missing) {
		keys := make([]string, len(missing.Errors))
		for i := range missing.Errors {
			row, _ := missing.Errors[i].Position()
			keys[i] = fmt.Sprintf("%s (line %d)", strings.Join(missing.Errors[i].Key(), "."), row)
		}
		word := "key"
		if len(keys) > 1 {
			word = "keys"
		}
		return fmt.Errorf("unknown %s %s", word, strings.Join(keys, ", "))
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		if k := de.Key(); len(k) > 0 {
			return fmt.Errorf("%s (line %d, column %d): %w", strings.Join(k, "."), row, col, err)
		}
		return fmt.Errorf("line %d, column %d: %w", row, col, err)
	}
	return err
}

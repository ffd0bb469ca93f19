package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
)

// defaultConfig is read when it exists; a --config given explicitly must.
const defaultConfig = "/etc/erofsd/config.toml"

// loadConfig applies the TOML file at path to the flags that were not set
// on the command line: keys are the flags' names with "_" for "-"
// (cache_dir = "..."). Unknown keys and values a flag refuses are errors
// naming the key.
func loadConfig(fset *flag.FlagSet, path string, explicit bool) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var values map[string]any
	if _, err := toml.Decode(string(data), &values); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	set := map[string]bool{}
	fset.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for key, v := range values {
		name := strings.ReplaceAll(key, "_", "-")
		f := fset.Lookup(name)
		if f == nil || name == "config" || name == "version" {
			return fmt.Errorf("config %s: unknown key %q", path, key)
		}
		if set[name] {
			continue // the command line wins
		}
		var s string
		switch v := v.(type) {
		case string:
			s = v
		case int64:
			s = fmt.Sprint(v)
		case bool:
			s = fmt.Sprint(v)
		default:
			return fmt.Errorf("config %s: key %q: want a string, number or boolean, got %T", path, key, v)
		}
		if err := f.Value.Set(s); err != nil {
			return fmt.Errorf("config %s: key %q: %v", path, key, err)
		}
	}
	return nil
}

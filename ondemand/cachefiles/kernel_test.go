package cachefiles

import "testing"

func TestHolesReadWrong(t *testing.T) {
	for release, want := range map[string]bool{
		"6.1.0-28-amd64":    true,
		"6.1.192":           true,
		"5.19.17":           true,
		"6.2":               false,
		"6.2.0-rc1":         false,
		"6.12.9+bpo-amd64":  false,
		"6.18.44-fc-v1294":  false,
		"7.0.1":             false,
		"":                  true,
		"garbage":           true,
		"6":                 true,
		"6.x.1":             true,
		"10.1.0-something":  false,
		"6.1-rc7":           true,
		"6.10.0-custom+abc": false,
	} {
		if got := HolesReadWrong(release); got != want {
			t.Errorf("HolesReadWrong(%q) = %v, want %v", release, got, want)
		}
	}
}

func TestCompressedUnreadable(t *testing.T) {
	for release, want := range map[string]bool{
		"6.1.0-28-amd64":   true,
		"6.1.192":          true,
		"6.8.12":           true,
		"6.9":              false,
		"6.9.0-rc1":        false,
		"6.12.9+bpo-amd64": false,
		"6.18.44-fc-v1294": false,
		"7.0.1":            false,
		"":                 true,
		"garbage":          true,
	} {
		if got := CompressedUnreadable(release); got != want {
			t.Errorf("CompressedUnreadable(%q) = %v, want %v", release, got, want)
		}
	}
}

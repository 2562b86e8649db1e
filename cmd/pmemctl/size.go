package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sizeValue is a flag holding a size in bytes, given as a number with an
// optional binary unit: "4096", "64K", "64M", "1G", "1GiB", "1.5G".
type sizeValue uint64

func (s *sizeValue) String() string {
	if *s == 0 {
		return "0"
	}
	return strings.ReplaceAll(humanBytes(uint64(*s)), " ", "")
}

func (s *sizeValue) Type() string { return "size" }

func (s *sizeValue) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s = sizeValue(n)
	return nil
}

// parseSize parses a size: digits, optionally with a fraction, then
// optionally K, M, G or T (powers of 1024), optionally followed by "iB" or
// "B"; case does not matter. The result must be a whole number of bytes.
func parseSize(v string) (uint64, error) {
	s := strings.ToUpper(strings.TrimSpace(v))
	s = strings.TrimSuffix(strings.TrimSuffix(s, "B"), "I")
	shift := 0
	if n := len(s); n > 0 {
		if i := strings.IndexByte("KMGT", s[n-1]); i >= 0 {
			shift = 10 * (i + 1)
			s = s[:n-1]
		}
	}
	bad := fmt.Errorf("invalid size %q: want a number of bytes with an optional unit, such as 4096, 64M or 1G", v)
	if s == "" || strings.ContainsAny(s, "+-eEx_") {
		return 0, bad
	}
	if !strings.Contains(s, ".") {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n > math.MaxUint64>>shift {
			return 0, bad
		}
		return n << shift, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	bytes := f * float64(uint64(1)<<shift)
	if err != nil || bytes >= math.MaxUint64 || bytes != math.Trunc(bytes) {
		return 0, bad
	}
	return uint64(bytes), nil
}

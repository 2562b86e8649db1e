package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/pmemgo/pmemgo/internal/layout"
	"github.com/pmemgo/pmemgo/recovery"
)

// writeJSON writes v as indented JSON, with a final newline.
func writeJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newTable returns a tabwriter for aligned columns, cells separated by
// tabs; Flush it when done.
func newTable(out io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
}

// plural returns "1 thing" or "n things" ("n entries" for "entry").
func plural[N int | int64 | uint32 | uint64](n N, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	if strings.HasSuffix(thing, "ry") {
		return fmt.Sprintf("%d %sies", n, thing[:len(thing)-1])
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// humanBytes returns n in the largest binary unit that keeps it at least
// 1, with up to one decimal: "512 B", "16 KiB", "1.5 GiB".
func humanBytes(n uint64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatUint(n, 10) + " B"
	}
	v, u := float64(n)/1024, 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	s := strconv.FormatFloat(v, 'f', 1, 64)
	return strings.TrimSuffix(s, ".0") + " " + units[u:u+1] + "iB"
}

// percent formats a fraction in [0, 1] as a percentage with one decimal.
func percent(f float64) string { return strconv.FormatFloat(100*f, 'f', 1, 64) + "%" }

// jsonObject is a JSON object whose members keep their order, so that an
// object's fields appear as the type declares them. dump writes millions
// of them, so it and its values are encoded by appendJSON, not by
// reflection.
type jsonObject []jsonMember

type jsonMember struct {
	Key   string
	Value any
}

func (o jsonObject) MarshalJSON() ([]byte, error) { return appendJSON(nil, o) }

// appendJSON appends v as compact JSON. It knows the values dump makes:
// jsonObject, []any, strings, booleans, integers and floats (finite ones:
// dump turns the others into strings); anything else goes through
// encoding/json.
func appendJSON(b []byte, v any) ([]byte, error) {
	var err error
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case string:
		return appendJSONString(b, v), nil
	case int64:
		return strconv.AppendInt(b, v, 10), nil
	case uint64:
		return strconv.AppendUint(b, v, 10), nil
	case uint32:
		return strconv.AppendUint(b, uint64(v), 10), nil
	case float64:
		return strconv.AppendFloat(b, v, 'g', -1, 64), nil
	case jsonObject:
		b = append(b, '{')
		for i, m := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(appendJSONString(b, m.Key), ':')
			if b, err = appendJSON(b, m.Value); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendJSON(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	}
	j, err := json.Marshal(v)
	return append(b, j...), err
}

// appendJSONString appends s as a JSON string. Bytes that are not UTF-8
// become U+FFFD, as encoding/json makes them.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r < 0x20:
			b = fmt.Appendf(b, `\u%04x`, r)
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return append(b, '"')
}

// kindName names a slab kind in output.
func kindName(kind uint8) string {
	switch kind {
	case layout.KindObjects:
		return "objects"
	case layout.KindArray:
		return "arrays"
	}
	return fmt.Sprintf("kind %d", kind)
}

// printer is a command's result, printed as text unless --json is given.
type printer interface{ print(out io.Writer) }

// readCommand is the body of a read command: it opens the pool read-only
// (recovered in memory, never written), builds the result and prints it as
// text or, with --json, as JSON.
func readCommand(jsonOut *bool, build func(path string, p *recovery.PoolFile) printer) func(*cobra.Command, []string) error {
	return poolCommand(func(cmd *cobra.Command, args []string) (err error) {
		p, err := recovery.OpenReadOnly(args[0])
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, p.Close()) }()
		r := build(args[0], p)
		if *jsonOut {
			return writeJSON(cmd.OutOrStdout(), r)
		}
		r.print(cmd.OutOrStdout())
		return nil
	})
}

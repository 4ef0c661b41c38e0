// Package yamlx decodes YAML strictly into Go structs and reports every
// problem as "file:line: key.path: message", the form that config and policy
// files promise their users.
//
// Rules: unknown keys, duplicate keys, wrong scalar types, several documents
// and YAML merge keys are errors. Struct fields are matched by their `yaml`
// tag only. A field of type Pos receives the position of the mapping that
// holds it, so later validation can point at the right line. A type that
// implements Unmarshaler decodes its own node (enums, CIDRs, patterns).
package yamlx

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Pos is a position in a YAML file. A struct field of type Pos is filled with
// the position of the mapping node the struct was decoded from.
type Pos struct {
	File string
	Line int
	// Key is the dotted path of the mapping, e.g. "listeners[1]".
	Key string
	// Lines holds the line of each key present in the mapping, so an error
	// about one key points at that key's line.
	Lines map[string]int
}

// LineOf returns the line of key in the mapping, or the mapping's own line.
func (p Pos) LineOf(key string) int {
	if l, ok := p.Lines[key]; ok {
		return l
	}
	return p.Line
}

// Error is one problem at one place in a file.
type Error struct {
	File string
	Line int
	Key  string // dotted key path, e.g. "backend.timeout"; empty for the whole file
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is a list of problems, sorted by line. It is returned whole so that a
// user fixes a file in one pass.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Errorf builds an Error at p for key (relative to p.Key; empty for p itself).
func Errorf(p Pos, key, format string, args ...any) *Error {
	return &Error{File: p.File, Line: p.LineOf(key), Key: joinKey(p.Key, key), Msg: fmt.Sprintf(format, args...)}
}

// Unmarshaler is implemented by types that decode their own node. The error
// returned needs no position: Decode adds file, line and key.
type Unmarshaler interface {
	UnmarshalYAMLX(n *yaml.Node) error
}

// Decode decodes the single YAML document in data into v, a pointer to a
// struct. file names the source in errors. The error, if any, is an Errors.
func Decode(file string, data []byte, v any) error {
	return decode(file, data, v, nil)
}

// decode is Decode, expanding environment variables first when lookup is
// not nil.
func decode(file string, data []byte, v any, lookup Lookup) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("yamlx: Decode needs a non-nil pointer, got %T", v)
	}
	d := &decoder{file: file}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	err := dec.Decode(&doc)
	if errors.Is(err, io.EOF) {
		// An empty file is an empty mapping: required keys are checked later.
		return nil
	}
	if err != nil {
		return Errors{d.syntaxError(data, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := extra.Line
		if err != nil {
			return Errors{d.syntaxError(data, err)}
		}
		return Errors{{File: file, Line: line, Msg: "only one YAML document is allowed"}}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if lookup != nil {
		d.expand(root, "", lookup)
		if len(d.errs) > 0 {
			return d.errs
		}
	}
	d.decode(root, rv.Elem(), "")
	if len(d.errs) == 0 {
		return nil
	}
	sort.SliceStable(d.errs, func(i, j int) bool { return d.errs[i].Line < d.errs[j].Line })
	return d.errs
}

type decoder struct {
	file string
	errs Errors
}

func (d *decoder) fail(n *yaml.Node, key, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: n.Line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// syntaxError turns yaml.v3's "yaml: line N: msg" into an Error at the
// line a reader would fix. yaml.v3 names the start of the enclosing mapping
// for some errors (an over-indented key after a quoted value points at its
// section, possibly lines above, past comments) and counts a parser error's
// line from 0; so the line is taken as the last line of the shortest
// prefix of the file that fails with the same message.
func (d *decoder) syntaxError(data []byte, err error) *Error {
	msg, line := splitYAMLError(err)
	if l := firstFailingLine(data, msg); l > 0 {
		line = l
	}
	return &Error{File: d.file, Line: line, Msg: "invalid YAML: " + msg}
}

// splitYAMLError splits "yaml: line N: msg" into msg and N (0 if absent).
func splitYAMLError(err error) (string, int) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, tail, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(num); err == nil {
				return tail, l
			}
		}
	}
	return msg, 0
}

// maxLocateLines bounds the prefixes parsed to locate an error (quadratic
// in the file's length); a longer file gets yaml.v3's line.
const maxLocateLines = 2000

// firstFailingLine returns the number of lines of the shortest prefix of
// data whose parse fails with msg, or 0.
func firstFailingLine(data []byte, msg string) int {
	lines := bytes.SplitAfter(data, []byte("\n"))
	if len(lines) > maxLocateLines {
		return 0
	}
	n := 0
	for i, l := range lines {
		n += len(l)
		dec := yaml.NewDecoder(bytes.NewReader(data[:n]))
		var doc yaml.Node
		err := dec.Decode(&doc)
		for err == nil {
			err = dec.Decode(&doc)
		}
		if errors.Is(err, io.EOF) {
			continue
		}
		if m, _ := splitYAMLError(err); m == msg {
			return i + 1
		}
	}
	return 0
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	posType      = reflect.TypeFor[Pos]()
	unmarshaler  = reflect.TypeFor[Unmarshaler]()
)

func (d *decoder) decode(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if v.CanAddr() && v.Addr().Type().Implements(unmarshaler) {
		if isNull(n) {
			d.fail(n, key, "needs a value")
			return
		}
		if err := v.Addr().Interface().(Unmarshaler).UnmarshalYAMLX(n); err != nil {
			var ye *Error
			if errors.As(err, &ye) {
				d.errs = append(d.errs, ye)
				return
			}
			d.fail(n, key, "%v", err)
		}
		return
	}
	if v.Type() == durationType {
		d.duration(n, v, key)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if isNull(n) {
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), key)
	case reflect.Struct:
		d.structure(n, v, key)
	case reflect.Slice:
		d.sequence(n, v, key)
	case reflect.Map:
		d.mapping(n, v, key)
	case reflect.String:
		if s, ok := d.scalar(n, key, "a string", "!!str", "!!int", "!!float"); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		if s, ok := d.scalar(n, key, "true or false", "!!bool"); ok {
			v.SetBool(s == "true" || s == "True" || s == "TRUE")
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if s, ok := d.scalar(n, key, "a whole number", "!!int"); ok {
			i, err := strconv.ParseInt(s, 0, v.Type().Bits())
			if err != nil {
				d.fail(n, key, "%q is not a whole number in range", s)
				return
			}
			v.SetInt(i)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if s, ok := d.scalar(n, key, "a whole number", "!!int"); ok {
			u, err := strconv.ParseUint(s, 0, v.Type().Bits())
			if err != nil {
				d.fail(n, key, "%q is not a non-negative whole number in range", s)
				return
			}
			v.SetUint(u)
		}
	case reflect.Float32, reflect.Float64:
		if s, ok := d.scalar(n, key, "a number", "!!int", "!!float"); ok {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				d.fail(n, key, "%q is not a finite number", s)
				return
			}
			v.SetFloat(f)
		}
	default:
		d.fail(n, key, "yamlx: unsupported Go type %s", v.Type())
	}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// scalar returns the value of a scalar node whose resolved tag is one of tags.
func (d *decoder) scalar(n *yaml.Node, key, want string, tags ...string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, key, "must be %s, not a %s", want, kindName(n))
		return "", false
	}
	for _, t := range tags {
		if n.Tag == t {
			return n.Value, true
		}
	}
	if isNull(n) {
		d.fail(n, key, "needs a value (%s)", want)
	} else {
		d.fail(n, key, "must be %s, got %q", want, n.Value)
	}
	return "", false
}

func (d *decoder) duration(n *yaml.Node, v reflect.Value, key string) {
	s, ok := d.scalar(n, key, `a duration such as "30s" or "5m"`, "!!str", "!!int")
	if !ok {
		return
	}
	if s == "0" {
		v.SetInt(0)
		return
	}
	t, err := time.ParseDuration(s)
	if err != nil || t < 0 {
		d.fail(n, key, `%q is not a duration such as "30s" or "5m"`, s)
		return
	}
	v.SetInt(int64(t))
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "single value"
	}
	return "node"
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value, key string) {
	if isNull(n) {
		// "key:" or "-" with nothing under it: an empty section, which
		// still has a place in the file for errors about what it lacks.
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).Type == posType {
				v.Field(i).Set(reflect.ValueOf(Pos{File: d.file, Line: n.Line, Key: key}))
			}
		}
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, key, "must be a mapping of keys, not a %s", kindName(n))
		return
	}
	t := v.Type()
	fields := map[string]int{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Type == posType {
			lines := make(map[string]int, len(n.Content)/2)
			for j := 0; j+1 < len(n.Content); j += 2 {
				lines[n.Content[j].Value] = n.Content[j].Line
			}
			v.Field(i).Set(reflect.ValueOf(Pos{File: d.file, Line: n.Line, Key: key, Lines: lines}))
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		fields[name] = i
		names = append(names, name)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		name := k.Value
		sub := joinKey(key, name)
		if seen[name] {
			d.fail(k, sub, "duplicate key")
			continue
		}
		seen[name] = true
		idx, ok := fields[name]
		if !ok {
			d.fail(k, sub, "unknown key (known keys: %s)", strings.Join(names, ", "))
			continue
		}
		d.decode(val, v.Field(idx), sub)
	}
}

func (d *decoder) sequence(n *yaml.Node, v reflect.Value, key string) {
	if isNull(n) {
		v.Set(reflect.MakeSlice(v.Type(), 0, 0))
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(n, key, "must be a list, not a %s", kindName(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", key, i))
	}
	v.Set(s)
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, key string) {
	if v.Type().Key().Kind() != reflect.String {
		d.fail(n, key, "yamlx: unsupported map key type %s", v.Type().Key())
		return
	}
	if isNull(n) {
		v.Set(reflect.MakeMap(v.Type()))
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, key, "must be a mapping, not a %s", kindName(n))
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		sub := joinKey(key, k.Value)
		mk := reflect.New(v.Type().Key()).Elem()
		mk.SetString(k.Value)
		if m.MapIndex(mk).IsValid() {
			d.fail(k, sub, "duplicate key")
			continue
		}
		mv := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, mv, sub)
		m.SetMapIndex(mk, mv)
	}
	v.Set(m)
}

func joinKey(base, key string) string {
	switch {
	case base == "":
		return key
	case key == "":
		return base
	case strings.HasPrefix(key, "["):
		return base + key
	}
	return base + "." + key
}

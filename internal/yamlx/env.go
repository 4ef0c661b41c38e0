package yamlx

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Lookup returns the value of an environment variable and whether it is set;
// os.LookupEnv is one.
type Lookup func(name string) (string, bool)

// DecodeEnv is Decode after replacing, in every scalar value (not in keys),
// ${NAME} by the variable's value and ${NAME:-default} by its value or, when
// it is unset or empty, by default; $$ is a literal $, and a $ not followed
// by { or $ stays as it is (so a pattern's trailing $ needs no escaping).
// Expansion works on the parsed document, so a value cannot add keys or
// lines: it becomes one scalar, typed as if written there when the scalar is
// plain (port: ${PORT} is a number) and a string when quoted. A variable
// that is unset and has no default is an error at the value's file:line:key.
func DecodeEnv(file string, data []byte, v any, lookup Lookup) error {
	return decode(file, data, v, lookup)
}

// expand replaces the references in every scalar under n.
func (d *decoder) expand(n *yaml.Node, key string, lookup Lookup) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			d.expand(c, key, lookup)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			d.expand(n.Content[i+1], joinKey(key, n.Content[i].Value), lookup)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			d.expand(c, fmt.Sprintf("%s[%d]", key, i), lookup)
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "$") {
			return
		}
		out, err := ExpandEnv(n.Value, lookup)
		if err != nil {
			d.fail(n, key, "%v", err)
			return
		}
		if out == n.Value {
			return
		}
		n.Value = out
		if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
			n.Tag = plainTag(out)
		}
	}
	// An alias shares its anchor's node, which is expanded where it stands.
}

// plainTag is the tag YAML gives s written as a plain scalar: !!int for
// "25", !!bool for "true", !!null for "", else !!str.
func plainTag(s string) string {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(s), &doc); err != nil || len(doc.Content) != 1 {
		if s == "" {
			return "!!null"
		}
		return "!!str"
	}
	n := doc.Content[0]
	if n.Kind != yaml.ScalarNode || n.Style != 0 || n.Value != s {
		return "!!str"
	}
	return n.Tag
}

// ExpandEnv replaces ${NAME} and ${NAME:-default} in s, and $$ by $ (see
// DecodeEnv). The error names the first variable that is unset without a
// default, or the malformed reference.
func ExpandEnv(s string, lookup Lookup) (string, error) {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '$')
		if i < 0 || i == len(s)-1 {
			b.WriteString(s)
			return b.String(), nil
		}
		b.WriteString(s[:i])
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			s = s[i+2:]
			continue
		case '{':
		default:
			b.WriteByte('$')
			s = s[i+1:]
			continue
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", fmt.Errorf("%q: ${ without its closing } (write $$ for a literal $)", s[i:])
		}
		ref := s[i+2 : i+end]
		s = s[i+end+1:]
		name, def, hasDef := strings.Cut(ref, ":-")
		if !validEnvName(name) {
			return "", fmt.Errorf("${%s}: %q is not a variable name (letters, digits, _; write $$ for a literal $)", ref, name)
		}
		val, set := lookup(name)
		switch {
		case hasDef && val == "":
			val = def
		case !set:
			return "", fmt.Errorf("environment variable %s is not set (give a default with ${%s:-value})", name, name)
		}
		b.WriteString(val)
	}
}

func validEnvName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

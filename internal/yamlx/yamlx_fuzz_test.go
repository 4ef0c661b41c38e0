package yamlx_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tlsguard/tlsguard/internal/yamlx"
)

// word decodes itself (the Unmarshaler path): a scalar without spaces.
type word string

func (w *word) UnmarshalYAMLX(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || strings.ContainsAny(n.Value, " \t") {
		return fmt.Errorf("must be one word")
	}
	*w = word(n.Value)
	return nil
}

type fuzzInner struct {
	Pos     yamlx.Pos
	Name    string            `yaml:"name"`
	Timeout time.Duration     `yaml:"timeout"`
	Port    int               `yaml:"port"`
	Size    int64             `yaml:"size"`
	Ratio   uint8             `yaml:"ratio"`
	On      *bool             `yaml:"on"`
	Tags    map[string]string `yaml:"tags"`
	Words   []word            `yaml:"words"`
}

type fuzzDoc struct {
	Pos      yamlx.Pos
	Hostname string               `yaml:"hostname"`
	Inner    fuzzInner            `yaml:"inner"`
	List     []fuzzInner          `yaml:"list"`
	Ptr      *fuzzInner           `yaml:"ptr"`
	Nested   map[string]fuzzInner `yaml:"nested"`
	Strings  []string             `yaml:"strings"`
	Enabled  bool                 `yaml:"enabled"`
}

// FuzzYAMLXDecode checks the strict decoder shared by the config and the
// policy, on any bytes:
//   - it does not panic (anchors, aliases, deep nesting, odd tags);
//   - it fails only with Errors, each naming the file, a line >= 0 and a
//     message, sorted by line, whose text starts with the file name;
//   - decoding the same bytes twice gives the same result (no hidden state).
func FuzzYAMLXDecode(f *testing.F) {
	for _, s := range []string{
		"hostname: mx\ninner: {name: a, timeout: 3s, port: 25, on: true, tags: {x: y}, words: [a, b]}\n",
		"list:\n  - name: a\n  - name: b\n    ratio: 300\n",
		"nested:\n  one: {port: 1}\n  two: {port: x}\n",
		"a: &x [1, 2]\nb: *x\n",
		"ptr: {words: [\"two words\"]}\n",
		"hostname: a\nhostname: b\n",
		"---\nhostname: a\n---\nhostname: b\n",
		"strings: !!binary aGVsbG8=\n",
		"enabled: yes\n",
		"inner: {timeout: 99999999999h}\n",
		"",
		"[",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var a, b fuzzDoc
		errA := yamlx.Decode("f.yaml", data, &a)
		errB := yamlx.Decode("f.yaml", data, &b)
		if (errA == nil) != (errB == nil) || (errA != nil && errA.Error() != errB.Error()) {
			t.Fatalf("two decodes differ: %v / %v", errA, errB)
		}
		if errA == nil {
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("two decodes differ:\n%+v\n%+v", a, b)
			}
			return
		}
		var es yamlx.Errors
		if !errors.As(errA, &es) || len(es) == 0 {
			t.Fatalf("error %T %v is not Errors", errA, errA)
		}
		if !strings.HasPrefix(errA.Error(), "f.yaml") {
			t.Fatalf("error %q does not name the file first", errA)
		}
		for i, e := range es {
			if e.File != "f.yaml" || e.Line < 0 || e.Msg == "" {
				t.Fatalf("bad error %#v", e)
			}
			if i > 0 && es[i-1].Line > e.Line {
				t.Fatalf("errors not sorted by line: %v", es)
			}
		}
	})
}

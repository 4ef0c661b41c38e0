package yamlx

import (
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ByteSize is a size in bytes, written as a number or with a unit: 512K,
// 25M, 1G (binary: K=1024). Config and policy files share it.
type ByteSize int64

// UnmarshalYAMLX implements Unmarshaler.
func (b *ByteSize) UnmarshalYAMLX(n *yaml.Node) error {
	s := strings.TrimSpace(n.Value)
	if n.Kind != yaml.ScalarNode || s == "" {
		return fmt.Errorf("must be a size such as 25M")
	}
	mult := int64(1)
	switch suf := strings.ToUpper(s[len(s)-1:]); suf {
	case "K", "M", "G":
		mult = map[string]int64{"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[suf]
		s = strings.TrimSpace(s[:len(s)-1])
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > (1<<40)/mult {
		return fmt.Errorf("%q is not a size such as 25M", n.Value)
	}
	*b = ByteSize(v * mult)
	return nil
}

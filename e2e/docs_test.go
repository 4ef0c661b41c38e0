package e2e

// The documentation must stand alone: someone who clones tlsguard has only
// the repository, so every relative link in its Markdown must resolve inside
// it (with the heading, when a link names one), no file may point to team
// material outside it, and every test a document cites as proof must exist.

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// repoRoot is the module root, one level above e2e/.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// skipDir reports folders that hold no documentation of tlsguard: VCS and
// scratch folders, test fixtures and benchmark output (not tracked).
func skipDir(rel string) bool {
	base := filepath.Base(rel)
	return rel != "." && (strings.HasPrefix(base, ".") || base == "state" || base == "testdata" ||
		rel == filepath.Join("bench", "results"))
}

// repoFiles returns the files under root (relative, slash-separated) whose
// name ends with one of exts, outside skipped folders.
func repoFiles(t testing.TB, root string, exts ...string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			if skipDir(rel) {
				return filepath.SkipDir
			}
			return nil
		}
		for _, e := range exts {
			if strings.HasSuffix(rel, e) {
				out = append(out, filepath.ToSlash(rel))
				break
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ownMarkdown is tlsguard's Markdown: the upstream go-smtp files in the copy
// are left as they were released, except PATCHES.md, which is ours.
func ownMarkdown(t testing.TB, root string) []string {
	var out []string
	for _, f := range repoFiles(t, root, ".md") {
		if strings.HasPrefix(f, "third_party/") && !strings.HasSuffix(f, "/PATCHES.md") {
			continue
		}
		out = append(out, f)
	}
	if len(out) < 5 {
		t.Fatalf("found only %v: not the repository root?", out)
	}
	return out
}

var (
	mdFence      = regexp.MustCompile("(?ms)^```.*?^```")
	mdCode       = regexp.MustCompile("`[^`\n]*`")
	mdLink       = regexp.MustCompile(`\]\(([^()\s]+)\)`)
	mdHeading    = regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*#*\s*$`)
	mdTestName   = regexp.MustCompile(`\b(?:Test|Fuzz|Benchmark)[A-Z][A-Za-z0-9_]*`)
	goTestFunc   = regexp.MustCompile(`(?m)^func ((?:Test|Fuzz|Benchmark)[A-Za-z0-9_]*)\(`)
	outsideRepos = []string{"../shared", "DESIGN.md", "/work/"}
)

// stripCode removes fenced blocks and code spans, where brackets and
// parentheses are text, not links.
func stripCode(s string) string {
	return mdCode.ReplaceAllString(mdFence.ReplaceAllString(s, ""), "")
}

// anchor is the fragment GitHub gives a heading: lower case, punctuation
// other than '-' and '_' dropped, spaces turned into '-'.
func anchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.ReplaceAll(heading, "`", "")) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// anchors lists the fragments of a Markdown file's headings.
func anchors(t testing.TB, path string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range mdHeading.FindAllStringSubmatch(mdFence.ReplaceAllString(string(data), ""), -1) {
		out[anchor(m[1])] = true
	}
	return out
}

// TestDocsLinksResolveInsideRepository follows every relative link of the
// project's Markdown.
func TestDocsLinksResolveInsideRepository(t *testing.T) {
	root := repoRoot(t)
	links := 0
	for _, f := range ownMarkdown(t, root) {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLink.FindAllStringSubmatch(stripCode(string(data)), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			links++
			path, frag, _ := strings.Cut(target, "#")
			abs := filepath.Join(root, filepath.Dir(f), filepath.FromSlash(path))
			if path == "" {
				abs = filepath.Join(root, f)
			}
			if rel, err := filepath.Rel(root, abs); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
				t.Errorf("%s: link %q leaves the repository", f, target)
				continue
			}
			st, err := os.Stat(abs)
			if err != nil {
				t.Errorf("%s: link %q: %v", f, target, err)
				continue
			}
			if frag != "" && !st.IsDir() && strings.HasSuffix(abs, ".md") && !anchors(t, abs)[frag] {
				t.Errorf("%s: link %q: no heading with anchor #%s in %s", f, target, frag, path)
			}
		}
	}
	if links < 5 {
		t.Fatalf("found only %d relative links: the link pattern is broken", links)
	}
}

// TestDocsNothingPointsOutsideRepository looks for references to team
// material that a clone of tlsguard does not have.
func TestDocsNothingPointsOutsideRepository(t *testing.T) {
	root := repoRoot(t)
	files := append(ownMarkdown(t, root), repoFiles(t, root, ".go", ".sh", ".yaml", ".yml", ".in", "Dockerfile")...)
	for _, f := range files {
		if strings.HasPrefix(f, "third_party/") && !strings.HasSuffix(f, ".md") {
			continue
		}
		if f == "e2e/docs_test.go" {
			continue // names the patterns it looks for
		}
		fh, err := os.Open(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for n := 1; sc.Scan(); n++ {
			for _, bad := range outsideRepos {
				if strings.Contains(sc.Text(), bad) {
					t.Errorf("%s:%d refers to %q, outside the repository: %s", f, n, bad, strings.TrimSpace(sc.Text()))
				}
			}
		}
		fh.Close()
	}
}

// TestDocsCitedTestsExist checks that every test, fuzz target and benchmark
// a document names as proof is defined in the repository's Go tests.
func TestDocsCitedTestsExist(t *testing.T) {
	root := repoRoot(t)
	defined := map[string]bool{}
	for _, f := range repoFiles(t, root, "_test.go") {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range goTestFunc.FindAllStringSubmatch(string(data), -1) {
			defined[m[1]] = true
		}
	}
	cited := 0
	for _, f := range ownMarkdown(t, root) {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range mdTestName.FindAllString(string(data), -1) {
			if name == "TestX" { // SECURITY.md's placeholder in "a test named TestX"
				continue
			}
			cited++
			if !defined[name] {
				t.Errorf("%s names %s, which no _test.go defines", f, name)
			}
		}
	}
	if cited < 50 {
		t.Fatalf("found only %d cited tests: the pattern is broken", cited)
	}
}

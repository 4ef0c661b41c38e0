package smtp

import (
	"testing"
)

// The BODY= parameter is the one the caller declared, never one the client
// makes up (RFC 6152 2, RFC 3030 3).
func TestClientMailBodyAsDeclared(t *testing.T) {
	with8bit := map[string]string{"8BITMIME": ""}
	withBinary := map[string]string{"8BITMIME": "", "CHUNKING": "", "BINARYMIME": ""}
	none := map[string]string{}
	for _, tc := range []struct {
		ext  map[string]string
		opts *MailOptions
		want string // "" for an error
	}{
		{with8bit, nil, "MAIL FROM:<a@example.org>"},
		{with8bit, &MailOptions{}, "MAIL FROM:<a@example.org>"},
		{with8bit, &MailOptions{Body: Body7Bit}, "MAIL FROM:<a@example.org> BODY=7BIT"},
		{with8bit, &MailOptions{Body: Body8BitMIME}, "MAIL FROM:<a@example.org> BODY=8BITMIME"},
		{with8bit, &MailOptions{Body: BodyBinaryMIME}, ""},
		{withBinary, &MailOptions{Body: BodyBinaryMIME}, "MAIL FROM:<a@example.org> BODY=BINARYMIME"},
		{with8bit, &MailOptions{Body: "9BIT"}, ""},
		// Without 8BITMIME there is no BODY= parameter: 7BIT is the
		// default, 8-bit data cannot be sent as such.
		{none, &MailOptions{Body: Body7Bit}, "MAIL FROM:<a@example.org>"},
		{none, &MailOptions{Body: Body8BitMIME}, ""},
		{none, nil, "MAIL FROM:<a@example.org>"},
	} {
		c := &Client{ext: tc.ext}
		got, err := c.mailLine("a@example.org", tc.opts)
		if tc.want == "" {
			if err == nil {
				t.Errorf("%v, %+v: got %q, want an error", tc.ext, tc.opts, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%v, %+v: got %q, %v; want %q", tc.ext, tc.opts, got, err, tc.want)
		}
	}
}

// Through the wire: a 7-bit declaration reaches a server that offers
// 8BITMIME as BODY=7BIT, not as BODY=8BITMIME.
func TestClientMailBody7BitOnTheWire(t *testing.T) {
	got := runPipelineTest(t, "", []pipelineStep{
		{read: 1, replies: []string{"250 2.1.0 ok\r\n"}},
	}, func(c *Client, wc *writeCounter) {
		if err := c.Mail("a@example.org", &MailOptions{Body: Body7Bit}); err != nil {
			t.Fatal(err)
		}
	})
	if len(got) != 1 || got[0] != "MAIL FROM:<a@example.org> BODY=7BIT" {
		t.Errorf("server read %q, want MAIL with BODY=7BIT", got)
	}
}

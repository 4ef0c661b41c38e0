package proxy

import (
	"strconv"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tlsguard/tlsguard/internal/mailbox"
	"github.com/tlsguard/tlsguard/internal/upstream"
	"github.com/tlsguard/tlsguard/policy"
)

// Metrics are the proxy's Prometheus collectors. Every label has a bounded
// set of values (listener names from the config, mechanisms, rule names from
// the policy, TLS versions, reply codes, fixed outcome words): never an
// address, a user name or an IP.
type Metrics struct {
	sessionsOpen    *prometheus.GaugeVec
	sessionsTotal   *prometheus.CounterVec
	refused         *prometheus.CounterVec
	handshakes      *prometheus.CounterVec
	startTLS        *prometheus.CounterVec
	auth            *prometheus.CounterVec
	decisions       *prometheus.CounterVec
	shadow          *prometheus.CounterVec
	relayDenied     *prometheus.CounterVec
	backendErrors   *prometheus.CounterVec
	backendReplies  *prometheus.CounterVec
	backendOpened   prometheus.Counter
	backendIdle     prometheus.Gauge
	backendActive   *prometheus.GaugeVec
	slotWaits       *prometheus.CounterVec
	slotTimeouts    *prometheus.CounterVec
	spooled         *prometheus.CounterVec
	messages        *prometheus.CounterVec
	messageBytes    *prometheus.CounterVec
	deliveryLatency *prometheus.HistogramVec
	mailbox         *mailbox.Metrics
}

// NewMetrics creates the collectors and registers them with reg (nil: a
// private registry, so the proxy always has somewhere to count).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	const ns = "tlsguard"
	m := &Metrics{
		sessionsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "sessions_open",
			Help: "Client sessions open now, per listener."}, []string{"listener"}),
		sessionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "sessions_total",
			Help: "Client sessions admitted, per listener."}, []string{"listener"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "connections_refused_total",
			Help: "Connections refused before a session started, by reason (limit_listener, limit_total, limit_per_ip, proxy_header, early_talker)."}, []string{"listener", "reason"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "tls_handshakes_total",
			Help: "TLS handshakes with clients by mode (implicit, starttls), version and result (ok, failed)."}, []string{"listener", "mode", "version", "result"}),
		startTLS: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "starttls_total",
			Help: "STARTTLS commands accepted, per listener."}, []string{"listener"}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "auth_total",
			Help: "AUTH attempts by mechanism and result (success, failure, throttled, error)."}, []string{"listener", "mechanism", "result"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "policy_decisions_total",
			Help: "Policy decisions for recipients by rule and action."}, []string{"rule", "action"}),
		relayDenied: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "relay_denied_total",
			Help: "Recipients refused with 550 5.7.1 relaying denied, per listener."}, []string{"listener"}),
		backendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "backend_errors_total",
			Help: "Backend connection failures by stage (connect, mail, rcpt, data)."}, []string{"stage"}),
		backendReplies: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "backend_replies_total",
			Help: "Replies from the backend by stage (mail, rcpt, data) and SMTP code."}, []string{"stage", "code"}),
		backendOpened: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "backend_connections_opened_total",
			Help: "Connections opened to the backend (greeted and EHLO said): the start-up probe, and every transaction that found no idle connection to reuse."}),
		backendIdle: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "backend_connections_idle",
			Help: "Idle backend connections kept for reuse now (at most backend.pool_size, each for at most backend.pool_idle)."}),
		backendActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "backend_connections_active",
			Help: "Backend connections in use now, by the class of the session holding them (authenticated, unauthenticated); with the idle ones at most backend.max_connections."}, []string{"class"}),
		slotWaits: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "backend_slot_waits_total",
			Help: "Sessions that found no backend connection free for their class and waited, by class."}, []string{"class"}),
		slotTimeouts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "backend_slot_timeouts_total",
			Help: "Sessions that waited backend.timeout for a backend connection in vain and got 451 4.4.1, by class."}, []string{"class"}),
		spooled: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "messages_spooled_total",
			Help: "Messages not complete within backend.spool_after: their backend connection was freed and they were sent once complete, by result (delivered, rejected, failed)."}, []string{"listener", "result"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "messages_total",
			Help: "Messages at the end of DATA by result (delivered, rejected, failed)."}, []string{"listener", "result"}),
		messageBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "message_bytes_total",
			Help: "Message bytes received from clients in DATA, per listener."}, []string{"listener"}),
		deliveryLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "delivery_latency_seconds",
			Help:    "Time from the client's end of DATA to the backend's reply.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"listener"}),
	}
	m.shadow = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "policy_shadow_total",
		Help: "Recipient decisions a rule in mode: shadow would have made differently, by rule and the action it would have taken."}, []string{"rule", "would"})
	reg.MustRegister(m.shadow)
	// The fixed stages exist from the start at 0, so an alert on backend
	// errors sees a series before the first error.
	for _, stage := range []string{"connect", "mail", "rcpt", "data"} {
		m.backendErrors.WithLabelValues(stage)
	}
	// Likewise both session classes, so that an alert on slot timeouts (the
	// unauthenticated share exhausted) has a series before the first wait.
	for _, c := range []upstream.Class{upstream.Unauthenticated, upstream.Authenticated} {
		m.backendActive.WithLabelValues(c.String())
		m.slotWaits.WithLabelValues(c.String())
		m.slotTimeouts.WithLabelValues(c.String())
	}

	reg.MustRegister(m.sessionsOpen, m.sessionsTotal, m.refused, m.handshakes, m.startTLS, m.auth, m.decisions,
		m.relayDenied, m.backendErrors, m.backendReplies, m.backendOpened, m.backendIdle, m.backendActive, m.slotWaits, m.slotTimeouts, m.spooled, m.messages, m.messageBytes, m.deliveryLatency)
	m.mailbox = mailbox.NewMetrics(reg)
	return m
}

// listen creates a listener's series at 0 when it opens, so that a
// dashboard shows the listener and an alert on a rate or on an absent
// series works before its first session. Only label values the listener
// can produce are created (no STARTTLS on an implicit port, no AUTH where
// it is not offered).
func (m *Metrics) listen(lc ListenerConfig, auth bool) {
	n := lc.Name
	m.sessionsOpen.WithLabelValues(n)
	m.sessionsTotal.WithLabelValues(n)
	reasons := []string{"limit_total", "limit_per_ip"}
	if lc.MaxSessions > 0 {
		reasons = append(reasons, "limit_listener")
	}
	if lc.ProxyProtocol != nil {
		reasons = append(reasons, "proxy_header")
	}
	if lc.GreetingDelay > 0 {
		reasons = append(reasons, "early_talker")
	}
	for _, r := range reasons {
		m.refused.WithLabelValues(n, r)
	}
	switch lc.TLS {
	case TLSStartTLS:
		m.startTLS.WithLabelValues(n)
		m.handshakes.WithLabelValues(n, "starttls", "", "failed")
	case TLSImplicit:
		m.handshakes.WithLabelValues(n, "implicit", "", "failed")
	}
	if auth {
		for _, mech := range []string{sasl.Plain, sasl.Login} {
			for _, r := range []string{"success", "failure", "throttled", "busy", "error"} {
				m.auth.WithLabelValues(n, mech, r)
			}
		}
	}
	m.relayDenied.WithLabelValues(n)
	for _, r := range []string{"delivered", "rejected", "failed"} {
		m.messages.WithLabelValues(n, r)
		m.spooled.WithLabelValues(n, r)
	}
	m.messageBytes.WithLabelValues(n)
	m.deliveryLatency.WithLabelValues(n)
}

// codeLabel renders an SMTP code as a label; anything outside 200-599 is
// "other", so the label set stays bounded.
func codeLabel(code int) string {
	if code < 200 || code > 599 {
		return "other"
	}
	return strconv.Itoa(code)
}

// countDecision counts one recipient decision; a 550 5.7.1 refusal is a
// relaying refusal. The rule is a name from the policy file (bounded); the
// file:line part some rules carry is cut off so a reload does not mint new
// label values.
func (s *Server) countDecision(listener string, d policy.Decision) {
	rule, _, _ := strings.Cut(d.Rule, " (")
	s.metrics.decisions.WithLabelValues(rule, strings.ToLower(d.Action.String())).Inc()
	for _, sh := range d.Shadow {
		s.metrics.shadow.WithLabelValues(sh.Rule, sh.Would.String()).Inc()
	}
	if d.Reply.Code == 550 && d.Reply.Enhanced == [3]int{5, 7, 1} {
		s.metrics.relayDenied.WithLabelValues(listener).Inc()
	}
}

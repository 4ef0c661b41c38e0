package auth

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts the sources' answers; it is an Observer. Labels are source
// names from the config and fixed result words, so the label sets stay
// bounded. Build it once: reloads rebuild chains, not metrics.
type Metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewMetrics registers the collectors with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tlsguard", Name: "auth_source_requests_total",
			Help: "Password checks per credential source and result (success, no_such_user, wrong_password, unavailable)."}, []string{"source", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "tlsguard", Name: "auth_source_latency_seconds",
			Help:    "Time a credential source took to answer.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"source"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency)
	}
	return m
}

// Observe implements Observer.
func (m *Metrics) Observe(source string, err error, seconds float64) {
	m.requests.WithLabelValues(source, Result(err)).Inc()
	m.latency.WithLabelValues(source).Observe(seconds)
}

// Result names an answer: success, no_such_user, wrong_password or
// unavailable.
func Result(err error) string {
	switch {
	case err == nil:
		return "success"
	case errors.Is(err, ErrBadPassword):
		return "wrong_password"
	case errors.Is(err, ErrNoSuchUser):
		return "no_such_user"
	}
	return "unavailable"
}

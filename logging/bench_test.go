package logging

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// BenchmarkLogLine is one transaction-sized JSON line written to a file, as
// New does (one write(2) per line), and through zapcore.BufferedWriteSyncer
// (256 KB, flushed every second): what buffering the log would save per
// line. docs/performance.md has the numbers and the decision.
func BenchmarkLogLine(b *testing.B) {
	for _, buffered := range []bool{false, true} {
		name := map[bool]string{false: "unbuffered", true: "buffered"}[buffered]
		b.Run(name, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "log"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			var ws zapcore.WriteSyncer = zapcore.Lock(f)
			if buffered {
				bws := &zapcore.BufferedWriteSyncer{WS: f, Size: 256 << 10, FlushInterval: time.Second}
				defer bws.Stop()
				ws = bws
			}
			enc := zap.NewProductionEncoderConfig()
			log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), ws, zapcore.InfoLevel))
			b.ReportAllocs()
			for b.Loop() {
				log.Info("transaction", zap.String("session", "0123456789abcdef"), zap.String("listener", "submission"),
					zap.String("client_ip", "127.0.0.1"), zap.Bool("tls", true), zap.String("user", ""),
					zap.String("from", "sender@example.org"), zap.Strings("rcpts", []string{"rcpt@example.test"}),
					zap.Strings("rules", []string{"local_domains"}), zap.Bool("delivered", true),
					zap.String("result", "250 2.0.0 Ok: queued as 0123456789"), zap.Int64("bytes", 5181),
					zap.Duration("duration_ms", 3*time.Millisecond), zap.String("tls_version", "TLSv1.3"),
					zap.String("tls_cipher", "TLS_AES_128_GCM_SHA256"), zap.String("sni", ""))
			}
		})
	}
}

// End-to-end tests of StreamHouse with the Go clients Go services run: franz-go (kgo, kadm)
// and IBM/sarama. TestMain starts one `streamhouse serve` (the binary named by
// $STREAMHOUSE_BIN, else the workspace's debug build) on free loopback ports, as the pytest
// suite does, and every test talks to it.
package streamhouse_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// bootstrap is the Kafka address of the server under test.
var bootstrap string

// topicSeq makes topic names unique within a run.
var topicSeq atomic.Int64

func uniqueTopic(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano()%1_000_000, topicSeq.Add(1))
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func binary() string {
	if b := os.Getenv("STREAMHOUSE_BIN"); b != "" {
		return b
	}
	return filepath.Join("..", "..", "target", "debug", "streamhouse")
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	bin := binary()
	if _, err := os.Stat(bin); err != nil {
		fmt.Fprintf(os.Stderr, "streamhouse binary not found at %s (cargo build, or set STREAMHOUSE_BIN): %v\n", bin, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "streamhouse-go-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	kafkaPort, err1 := freePort()
	httpPort, err2 := freePort()
	if err1 != nil || err2 != nil {
		fmt.Fprintln(os.Stderr, "no free port:", err1, err2)
		return 1
	}
	bootstrap = fmt.Sprintf("127.0.0.1:%d", kafkaPort)
	var log bytes.Buffer
	cmd := exec.Command(bin, "serve",
		"--data-dir", filepath.Join(dir, "data"),
		"--kafka-addr", bootstrap,
		"--http-addr", fmt.Sprintf("127.0.0.1:%d", httpPort))
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.Env = append(os.Environ(), "RUST_LOG=warn")
	// Its own process group, so that a stop reaches nothing else.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "starting streamhouse:", err)
		return 1
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	if err := waitHealthy(fmt.Sprintf("http://127.0.0.1:%d/health", httpPort), exited); err != nil {
		fmt.Fprintf(os.Stderr, "server not healthy: %v\n--- server log ---\n%s\n", err, log.String())
		return 1
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- server log ---\n%s\n", tail(log.String(), 8000))
	}
	return code
}

func waitHealthy(url string, exited <-chan error) error {
	deadline := time.Now().Add(30 * time.Second)
	client := http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("server exited: %v", err)
		default:
		}
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not healthy within 30 s", url)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// testContext is bounded so a hang fails the test instead of the CI run.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

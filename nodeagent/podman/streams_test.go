//go:build remote

package podman

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vk-fleet/vk-fleet/bridge"
	"github.com/vk-fleet/vk-fleet/nodeagent"
)

// syncBuffer is a bytes.Buffer that one goroutine writes while another
// reads. The zero value is ready to use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// oneByteReader returns its data one byte per Read, as a person types.
type oneByteReader struct{ data []byte }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.data[0]
	r.data = r.data[1:]
	return 1, nil
}

// sleeper creates a running pod whose container "main" sleeps, and
// returns its workload.
func sleeper(t *testing.T, e *env) *bridge.Workload {
	t.Helper()
	w := workload("sleeper", sh("main", e.image, "exec sleep 3600"))
	create(t, e.rt, w, "h")
	waitState(t, e.rt, w.UID, "main", nodeagent.ContainerRunning)
	return w
}

func TestExecOutputAndExitCode(t *testing.T) {
	e := setup(t)
	w := sleeper(t, e)

	var out, errOut bytes.Buffer
	starts := 0
	code, err := e.rt.Exec(t.Context(), w.UID, "main", []string{"echo", "hi"},
		nodeagent.StreamIO{Stdout: &out, Stderr: &errOut, Started: func() { starts++ }})
	if err != nil || code != 0 || out.String() != "hi\n" || errOut.Len() != 0 {
		t.Errorf("exec echo hi: code %d, err %v, stdout %q, stderr %q; want 0, nil, \"hi\\n\", \"\"", code, err, out.String(), errOut.String())
	}
	if starts != 1 {
		t.Errorf("exec echo hi called Started %d times, want 1 (an exec probe's timeout starts there)", starts)
	}

	out.Reset()
	code, err = e.rt.Exec(t.Context(), w.UID, "main", []string{"sh", "-c", "echo out; echo err >&2; exit 7"},
		nodeagent.StreamIO{Stdout: &out, Stderr: &errOut})
	if err != nil || code != 7 || out.String() != "out\n" || errOut.String() != "err\n" {
		t.Errorf("exec exit 7: code %d, err %v, stdout %q, stderr %q; want 7, nil, \"out\\n\", \"err\\n\"", code, err, out.String(), errOut.String())
	}

	// Output is complete when Exec returns, however much there is.
	out.Reset()
	code, err = e.rt.Exec(t.Context(), w.UID, "main", []string{"sh", "-c", "head -c 3000000 /dev/zero"}, nodeagent.StreamIO{Stdout: &out})
	if err != nil || code != 0 || out.Len() != 3000000 {
		t.Errorf("exec head -c 3000000: code %d, err %v, %d bytes of output", code, err, out.Len())
	}

	// Errors before the command starts are the runtime's: an exec probe
	// counts them neither as success nor as failure.
	_, err = e.rt.Exec(t.Context(), w.UID, "nope", []string{"true"}, nodeagent.StreamIO{Stdout: &out})
	if !errors.Is(err, nodeagent.ErrNoContainer) || !errors.Is(err, nodeagent.ErrNotStarted) {
		t.Errorf("exec in a missing container: %v, want ErrNoContainer and ErrNotStarted", err)
	}
	_, err = e.rt.Exec(t.Context(), newUID(), "main", []string{"true"}, nodeagent.StreamIO{Stdout: &out})
	if !errors.Is(err, nodeagent.ErrNoContainer) || !errors.Is(err, nodeagent.ErrNotStarted) {
		t.Errorf("exec in a missing pod: %v, want ErrNoContainer and ErrNotStarted", err)
	}
	code, err = e.rt.Exec(t.Context(), w.UID, "main", []string{"/no/such/command"}, nodeagent.StreamIO{Stdout: &out, Stderr: &errOut})
	if err == nil && code == 0 {
		t.Errorf("exec of a missing command succeeded")
	}
	t.Logf("exec of a missing command: code %d, err %v", code, err)
}

func TestExecStdin(t *testing.T) {
	e := setup(t)
	w := sleeper(t, e)

	var out bytes.Buffer
	code, err := e.rt.Exec(t.Context(), w.UID, "main", []string{"cat"},
		nodeagent.StreamIO{Stdin: strings.NewReader("abc"), Stdout: &out})
	if err != nil || code != 0 || out.String() != "abc" {
		t.Errorf("exec cat <<< abc: code %d, err %v, stdout %q; want 0, nil, \"abc\"", code, err, out.String())
	}

	// podman's default detach keys (ctrl-p, ctrl-q), typed one at a time,
	// reach the command.
	typed := "a\x10\x11b"
	out.Reset()
	code, err = e.rt.Exec(t.Context(), w.UID, "main", []string{"cat"},
		nodeagent.StreamIO{Stdin: &oneByteReader{data: []byte(typed)}, Stdout: &out})
	if err != nil || code != 0 || out.String() != typed {
		t.Errorf("exec cat with ctrl-p ctrl-q typed: code %d, err %v, stdout %q; want 0, nil, %q", code, err, out.String(), typed)
	}

	// Binary input of some size, checked by its digest inside.
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	sum := sha256.Sum256(data)
	out.Reset()
	code, err = e.rt.Exec(t.Context(), w.UID, "main", []string{"sha256sum"},
		nodeagent.StreamIO{Stdin: bytes.NewReader(data), Stdout: &out})
	if err != nil || code != 0 || !strings.HasPrefix(out.String(), hex.EncodeToString(sum[:])) {
		t.Errorf("exec sha256sum of 4 MiB: code %d, err %v, stdout %q; want %x", code, err, out.String(), sum)
	}
}

func TestExecTTY(t *testing.T) {
	e := setup(t)
	w := sleeper(t, e)

	// A size known when the session starts is the terminal's from the start.
	sizes := make(chan nodeagent.TermSize, 1)
	sizes <- nodeagent.TermSize{Width: 100, Height: 40}
	var out bytes.Buffer
	code, err := e.rt.Exec(t.Context(), w.UID, "main", []string{"stty", "size"},
		nodeagent.StreamIO{Stdout: &out, TTY: true, Resize: sizes})
	if err != nil || code != 0 || strings.TrimSpace(out.String()) != "40 100" {
		t.Errorf("exec -t stty size: code %d, err %v, output %q; want 0, nil, \"40 100\"", code, err, out.String())
	}

	// An interactive shell follows resizes.
	stdin, stdinW := io.Pipe()
	t.Cleanup(func() { stdinW.Close() })
	sizes = make(chan nodeagent.TermSize, 1)
	var tty syncBuffer
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := e.rt.Exec(t.Context(), w.UID, "main", []string{"sh"},
			nodeagent.StreamIO{Stdin: stdin, Stdout: &tty, TTY: true, Resize: sizes})
		done <- result{code, err}
	}()
	sizes <- nodeagent.TermSize{Width: 120, Height: 50}
	eventually(t, 30*time.Second, func() string {
		if strings.Contains(tty.String(), "50 120") {
			return ""
		}
		if _, err := io.WriteString(stdinW, "stty size\n"); err != nil {
			return fmt.Sprintf("writing to the shell: %v", err)
		}
		return fmt.Sprintf("terminal shows %q, want the size 50 120", tty.String())
	})
	if _, err := io.WriteString(stdinW, "exit 3\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		if res.err != nil || res.code != 3 {
			t.Errorf("interactive exec: code %d, err %v; want 3, nil", res.code, res.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("interactive exec did not end after exit")
	}
}

// firstWrite is a writer that closes ready on its first write.
type firstWrite struct {
	syncBuffer
	once  sync.Once
	ready chan struct{}
}

func (f *firstWrite) Write(p []byte) (int, error) {
	f.once.Do(func() { close(f.ready) })
	return f.syncBuffer.Write(p)
}

func TestExecCancelKillsTheCommand(t *testing.T) {
	e := setup(t)
	w := sleeper(t, e)

	ctx, cancel := context.WithCancel(t.Context())
	out := &firstWrite{ready: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := e.rt.Exec(ctx, w.UID, "main", []string{"sh", "-c", "echo started; exec sleep 1234"}, nodeagent.StreamIO{Stdout: out})
		done <- err
	}()
	select {
	case <-out.ready:
	case err := <-done:
		t.Fatalf("exec ended before it started: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("exec produced no output")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled exec: %v, want context.Canceled", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("exec did not return after its context ended")
	}
	eventually(t, 30*time.Second, func() string {
		var ps bytes.Buffer
		if _, err := e.rt.Exec(t.Context(), w.UID, "main", []string{"ps", "-o", "args"}, nodeagent.StreamIO{Stdout: &ps}); err != nil {
			return fmt.Sprintf("exec ps: %v", err)
		}
		if strings.Contains(ps.String(), "sleep 1234") {
			return fmt.Sprintf("the cancelled command still runs:\n%s", ps.String())
		}
		return ""
	})
}

func TestAttach(t *testing.T) {
	e := setup(t)
	in := sh("cat", e.image, "exec cat")
	in.Stdin = true
	w := workload("attach", in, sh("ticker", e.image, "while true; do echo tick; sleep 0.2; done"))
	create(t, e.rt, w, "h")
	for _, c := range []string{"cat", "ticker"} {
		waitState(t, e.rt, w.UID, c, nodeagent.ContainerRunning)
	}

	// The client's EOF is the container's: cat ends and so does the
	// attach. (Attach reads stdin only once podman is attached, so no
	// input is lost.)
	var out bytes.Buffer
	err := e.rt.Attach(t.Context(), w.UID, "cat", nodeagent.StreamIO{Stdin: strings.NewReader("hello\n"), Stdout: &out})
	if err != nil || out.String() != "hello\n" {
		t.Errorf("attach with stdin: err %v, output %q; want nil, \"hello\\n\"", err, out.String())
	}
	waitState(t, e.rt, w.UID, "cat", nodeagent.ContainerExited)

	// Output only: the attach streams what the process writes from now on.
	ctx, cancel := context.WithCancel(t.Context())
	var ticks syncBuffer
	done := make(chan error, 1)
	go func() { done <- e.rt.Attach(ctx, w.UID, "ticker", nodeagent.StreamIO{Stdout: &ticks}) }()
	eventually(t, 30*time.Second, func() string {
		if strings.Count(ticks.String(), "tick\n") < 2 {
			return fmt.Sprintf("attach output %q, want ticks", ticks.String())
		}
		return ""
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled attach: %v, want context.Canceled", err)
	}

	if err := e.rt.Attach(t.Context(), w.UID, "nope", nodeagent.StreamIO{Stdout: &out}); !errors.Is(err, nodeagent.ErrNoContainer) {
		t.Errorf("attach to a missing container: %v, want ErrNoContainer", err)
	}
}

func TestAttachTTY(t *testing.T) {
	e := setup(t)
	c := sh("term", e.image, "while true; do stty size; sleep 0.2; done")
	c.TTY = true
	w := workload("term", c)
	create(t, e.rt, w, "h")
	waitState(t, e.rt, w.UID, "term", nodeagent.ContainerRunning)

	ctx, cancel := context.WithCancel(t.Context())
	sizes := make(chan nodeagent.TermSize, 1)
	sizes <- nodeagent.TermSize{Width: 90, Height: 30}
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- e.rt.Attach(ctx, w.UID, "term", nodeagent.StreamIO{Stdout: &out, TTY: true, Resize: sizes})
	}()
	eventually(t, 30*time.Second, func() string {
		if !strings.Contains(out.String(), "30 90") {
			return fmt.Sprintf("terminal output %q, want the size 30 90", out.String())
		}
		return ""
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled attach: %v, want context.Canceled", err)
	}

	// An interactive shell: input through the terminal, the attach ends
	// with the shell.
	shell := sh("shell", e.image, "exec sh")
	shell.TTY, shell.Stdin = true, true
	w = workload("shell", shell)
	create(t, e.rt, w, "h")
	waitState(t, e.rt, w.UID, "shell", nodeagent.ContainerRunning)
	var term bytes.Buffer
	err := e.rt.Attach(t.Context(), w.UID, "shell", nodeagent.StreamIO{Stdin: strings.NewReader("expr 6 \\* 7; exit 0\n"), Stdout: &term, TTY: true})
	if err != nil || !strings.Contains(term.String(), "42") {
		t.Errorf("attach -it to sh: err %v, terminal %q; want nil and 42", err, term.String())
	}
}

// podClient returns an HTTP client whose every connection is DialPod's to
// port of pod uid.
func podClient(rt *Runtime, uid string, port int32) *http.Client {
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return rt.DialPod(ctx, uid, port)
			},
			DisableKeepAlives: true,
		},
	}
}

// get fetches path from c and returns the body.
func get(c *http.Client, path string) (string, error) {
	resp, err := c.Get("http://pod" + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return string(body), nil
}

func TestDialPod(t *testing.T) {
	e := setup(t)
	// No published port: only the pod's own network namespace reaches it.
	web := sh("web", e.image, "mkdir -p /www && echo hello-pod > /www/index.html && "+
		"head -c 20971520 /dev/urandom > /www/big && sha256sum /www/big | cut -d' ' -f1 > /www/big.sha256 && "+
		"exec httpd -f -p 127.0.0.1:8080 -h /www")
	w := workload("web", web)
	create(t, e.rt, w, "h")
	waitState(t, e.rt, w.UID, "web", nodeagent.ContainerRunning)

	client := podClient(e.rt, w.UID, 8080)
	var want string
	eventually(t, 60*time.Second, func() string {
		var err error
		if want, err = get(client, "/big.sha256"); err != nil {
			return err.Error()
		}
		return ""
	})
	if got, err := get(client, "/"); err != nil || got != "hello-pod\n" {
		t.Errorf("GET / through DialPod: %q, %v; want \"hello-pod\\n\"", got, err)
	}
	resp, err := client.Get("http://pod/big")
	if err != nil {
		t.Fatalf("GET /big: %v", err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	t.Logf("fetched %d bytes through DialPod", n)
	if err != nil || n != 20<<20 || hex.EncodeToString(h.Sum(nil)) != strings.TrimSpace(want) {
		t.Errorf("GET /big: %d bytes, err %v, sha256 %x; want %d bytes with sha256 %s", n, err, h.Sum(nil), 20<<20, want)
	}

	// Nothing listens on 8081; there is no pod of that UID.
	if c, err := e.rt.DialPod(t.Context(), w.UID, 8081); err == nil {
		c.Close()
		t.Error("DialPod to a closed port succeeded")
	}
	if _, err := e.rt.DialPod(t.Context(), newUID(), 8080); !errors.Is(err, nodeagent.ErrNoContainer) {
		t.Errorf("DialPod to a missing pod: %v, want ErrNoContainer", err)
	}

	// The namespace stays the pod's: this process's own 127.0.0.1:8080 is
	// another place. A connection made right after DialPod on this
	// process's side lands here.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "host\n")
			c.Close()
		}
	}()
	for range 20 {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatalf("dialling this process's listener after DialPod: %v", err)
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if line != "host\n" {
			t.Fatalf("this process's listener answered %q", line)
		}
	}
}

func TestDialPodHostNetwork(t *testing.T) {
	e := setup(t)
	port := freePort(t)
	web := sh("web", e.image, fmt.Sprintf("mkdir -p /www && echo hello-host > /www/index.html && exec httpd -f -p 127.0.0.1:%d -h /www", port))
	w := workload("hostweb", web)
	w.HostNetwork = true
	create(t, e.rt, w, "h")
	waitState(t, e.rt, w.UID, "web", nodeagent.ContainerRunning)

	client := podClient(e.rt, w.UID, port)
	eventually(t, 60*time.Second, func() string {
		got, err := get(client, "/")
		if err != nil {
			return err.Error()
		}
		if got != "hello-host\n" {
			return fmt.Sprintf("GET / = %q", got)
		}
		return ""
	})
}

func TestPodStats(t *testing.T) {
	e := setup(t)
	// Burns a little CPU, then idles.
	busy := sh("busy", e.image, "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; echo done > /tmp/done; exec sleep 3600")
	w := workload("stats", busy, sh("idle", e.image, "exec sleep 3600"))
	create(t, e.rt, w, "h")
	other := sleeper(t, e)

	var got *nodeagent.PodStats
	eventually(t, 60*time.Second, func() string {
		list, err := e.rt.PodStats(t.Context())
		if err != nil {
			return fmt.Sprintf("PodStats: %v", err)
		}
		got = nil
		for i := range list {
			if list[i].UID == w.UID {
				got = &list[i]
			}
		}
		if got == nil {
			return fmt.Sprintf("pod %s not in %+v", w.UID, list)
		}
		if len(got.Containers) != 2 || got.Containers[0].Name != "busy" || got.Containers[0].CPUNanos < uint64(time.Millisecond) {
			return fmt.Sprintf("pod stats %+v: want busy (with CPU time) and idle", *got)
		}
		return ""
	})
	t.Logf("pod stats: %+v", *got)
	if got.Namespace != "default" || got.Name != "stats" {
		t.Errorf("pod stats name %s/%s, want default/stats", got.Namespace, got.Name)
	}
	for _, c := range got.Containers {
		if c.StartedAt.IsZero() || c.Time.IsZero() || c.MemoryUsageBytes == 0 || c.MemoryWorkingSetBytes == 0 {
			t.Errorf("container stats %+v: want start and sample times and memory", c)
		}
	}

	// Another device on the same podman sees none of it; the sleeper is
	// reported too.
	list, err := e.newRuntime(t, uniqueName("other")).PodStats(t.Context())
	if err != nil || len(list) != 0 {
		t.Errorf("another device's PodStats: %+v, %v; want none", list, err)
	}
	list, err = e.rt.PodStats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range list {
		found = found || p.UID == other.UID
	}
	if !found {
		t.Errorf("PodStats %+v lacks the pod %s", list, other.UID)
	}
}

func TestContainerLogs(t *testing.T) {
	e := setup(t)
	w := workload("logger", sh("main", e.image, "echo line-1; echo line-2 >&2; exec sleep 3600"))
	create(t, e.rt, w, "h")
	waitState(t, e.rt, w.UID, "main", nodeagent.ContainerRunning)

	eventually(t, 30*time.Second, func() string {
		rc, err := e.rt.ContainerLogs(t.Context(), w.UID, "main", nodeagent.LogOptions{})
		if err != nil {
			return fmt.Sprintf("ContainerLogs: %v", err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil || !strings.Contains(string(b), "line-1\n") || !strings.Contains(string(b), "line-2\n") {
			return fmt.Sprintf("log %q, %v; want line-1 and line-2", b, err)
		}
		return ""
	})
	if _, err := e.rt.ContainerLogs(t.Context(), w.UID, "nope", nodeagent.LogOptions{}); !errors.Is(err, nodeagent.ErrNoContainer) {
		t.Errorf("log of a missing container: %v, want ErrNoContainer", err)
	}
}

// kubectl logs --tail counts a last line without a newline as a line, as
// kubelet does.
func TestContainerLogsTail(t *testing.T) {
	e := setup(t)
	w := workload("tailer", sh("main", e.image, "printf 'a\\nb\\nc'; exec sleep 3600"))
	create(t, e.rt, w, "h")
	waitState(t, e.rt, w.UID, "main", nodeagent.ContainerRunning)
	for _, tc := range []struct {
		tail int64
		want string
	}{{1, "c"}, {2, "b\nc"}, {5, "a\nb\nc"}} {
		eventually(t, 30*time.Second, func() string {
			rc, err := e.rt.ContainerLogs(t.Context(), w.UID, "main", nodeagent.LogOptions{TailLines: &tc.tail})
			if err != nil {
				return fmt.Sprintf("ContainerLogs: %v", err)
			}
			defer rc.Close()
			b, err := io.ReadAll(rc)
			if err != nil || string(b) != tc.want {
				return fmt.Sprintf("--tail %d: %q, %v; want %q", tc.tail, b, err, tc.want)
			}
			return ""
		})
	}
	// Following with a tail: the last lines, then what comes.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	two := int64(2)
	rc, err := e.rt.ContainerLogs(ctx, w.UID, "main", nodeagent.LogOptions{TailLines: &two, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := make([]byte, len("b\nc"))
	if _, err := io.ReadFull(rc, got); err != nil || string(got) != "b\nc" {
		t.Errorf("--tail 2 -f: %q, %v; want %q", got, err, "b\nc")
	}
}

// DialPod remembers a pod's network namespace, so that probes reach the
// pod without asking podman, and follows the pod when it is recreated
// behind the runtime's back (here by another agent's runtime).
func TestDialPodFollowsARecreatedPod(t *testing.T) {
	e := setup(t)
	serve := func(text string) bridge.Container {
		return sh("web", e.image, "mkdir -p /www && echo "+text+" > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www")
	}
	w := workload("web", serve("one"))
	create(t, e.rt, w, "h")
	waitState(t, e.rt, w.UID, "web", nodeagent.ContainerRunning)
	client := podClient(e.rt, w.UID, 8080)
	eventually(t, 60*time.Second, func() string {
		if got, err := get(client, "/"); err != nil || got != "one\n" {
			return fmt.Sprintf("GET / = %q, %v; want \"one\\n\"", got, err)
		}
		return ""
	})

	other := e.newRuntime(t, e.rt.Device())
	if err := other.RemovePod(t.Context(), w.UID, 0); err != nil {
		t.Fatalf("RemovePod: %v", err)
	}
	w2 := workload("web", serve("two"))
	w2.UID = w.UID
	if err := other.CreatePod(t.Context(), w2, "h2"); err != nil {
		t.Fatalf("CreatePod: %v", err)
	}
	waitState(t, other, w.UID, "web", nodeagent.ContainerRunning)
	eventually(t, 60*time.Second, func() string {
		if got, err := get(client, "/"); err != nil || got != "two\n" {
			return fmt.Sprintf("GET / = %q, %v; want \"two\\n\" from the recreated pod", got, err)
		}
		return ""
	})
}

package framework

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// NATSCluster is a cluster of nats-server processes with JetStream on 127.0.0.1, built from the version
// in go.mod, for tests that kill and restart its nodes.
type NATSCluster struct {
	Dir     string
	bin     string
	ports   []int
	cluster []int
	monitor []int
	cmds    []*exec.Cmd
	log     io.Writer
}

// StartNATSCluster builds nats-server (the module version go.mod pins) and starts n nodes.
func StartNATSCluster(ctx context.Context, dir string, n int, log io.Writer) (*NATSCluster, error) {
	if log == nil {
		log = io.Discard
	}
	bin := filepath.Join(dir, "nats-server")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/nats-io/nats-server/v2")
	build.Dir = RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building nats-server: %v: %s", err, out)
	}
	c := &NATSCluster{Dir: dir, bin: bin, log: log, cmds: make([]*exec.Cmd, n)}
	for i := 0; i < n; i++ {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		cp, err := FreePort()
		if err != nil {
			return nil, err
		}
		mp, err := FreePort()
		if err != nil {
			return nil, err
		}
		c.ports = append(c.ports, p)
		c.cluster = append(c.cluster, cp)
		c.monitor = append(c.monitor, mp)
	}
	for i := 0; i < n; i++ {
		if err := c.Start(i); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

// URL lists every node, for --nats-url.
func (c *NATSCluster) URL() string {
	urls := make([]string, len(c.ports))
	for i, p := range c.ports {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", p)
	}
	return strings.Join(urls, ",")
}

// Start starts node i (again) on its ports and store. Once every node runs, it waits until each
// reports JetStream healthy: a meta leader, and its streams and consumers current. A node that only
// accepts connections may still be electing leaders; a kubehistory replica started then cannot
// create its streams.
func (c *NATSCluster) Start(i int) error {
	var routes []string
	for j, cp := range c.cluster {
		if j != i {
			routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", cp))
		}
	}
	name := fmt.Sprintf("n%d", i)
	logFile, err := os.OpenFile(filepath.Join(c.Dir, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, "-a", "127.0.0.1", "-p", fmt.Sprint(c.ports[i]), "-js",
		"-sd", filepath.Join(c.Dir, name), "--server_name", name, "--cluster_name", "kubehistory-test",
		"--cluster", fmt.Sprintf("nats://127.0.0.1:%d", c.cluster[i]), "--routes", strings.Join(routes, ","),
		"-m", fmt.Sprint(c.monitor[i]))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return err
	}
	go func() { _ = cmd.Wait(); logFile.Close() }()
	c.cmds[i] = cmd
	fmt.Fprintf(c.log, "started nats-server %s (pid %d) on %d\n", name, cmd.Process.Pid, c.ports[i])
	if err := WaitFor(context.Background(), 30*time.Second, func() error {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", c.ports[i]), time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	}); err != nil {
		return err
	}
	for _, cmd := range c.cmds {
		if cmd == nil {
			return nil // a quorum may be missing until the other nodes start
		}
	}
	return c.waitHealthy()
}

// waitHealthy waits until every node's /healthz answers 200: JetStream enabled, a meta leader, and the
// node's streams and consumers current.
func (c *NATSCluster) waitHealthy() error {
	client := &http.Client{Timeout: 5 * time.Second}
	for i, port := range c.monitor {
		if err := WaitFor(context.Background(), 90*time.Second, func() error {
			resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
			if err != nil {
				return err
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("nats-server n%d /healthz: %s %s", i, resp.Status, strings.TrimSpace(string(body)))
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// Kill ends node i with SIGKILL.
func (c *NATSCluster) Kill(i int) {
	if cmd := c.cmds[i]; cmd != nil && cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		c.cmds[i] = nil
	}
}

// Stop ends every node.
func (c *NATSCluster) Stop() {
	for i := range c.cmds {
		if cmd := c.cmds[i]; cmd != nil && cmd.Process != nil {
			stopProcess(cmd.Process.Pid)
			c.cmds[i] = nil
		}
	}
}

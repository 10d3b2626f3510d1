package framework

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy spreads TCP connections over backends on 127.0.0.1, skipping those that refuse: it stands in for
// the Service in front of several kubehistory replicas, so that kube-apiserver's audit webhook reaches
// whichever replica is alive (TLS passes through untouched).
type Proxy struct {
	l        net.Listener
	mu       sync.Mutex
	backends []string
	next     atomic.Uint64
}

// StartProxy listens on 127.0.0.1:port.
func StartProxy(port int) (*Proxy, error) {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, err
	}
	p := &Proxy{l: l}
	go p.serve()
	return p, nil
}

// SetBackends replaces the backend addresses.
func (p *Proxy) SetBackends(addrs ...string) {
	p.mu.Lock()
	p.backends = append([]string(nil), addrs...)
	p.mu.Unlock()
}

// Close stops listening.
func (p *Proxy) Close() error { return p.l.Close() }

func (p *Proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *Proxy) handle(c net.Conn) {
	defer c.Close()
	p.mu.Lock()
	backends := p.backends
	p.mu.Unlock()
	start := p.next.Add(1)
	for i := range backends {
		addr := backends[(int(start)+i)%len(backends)]
		b, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			continue
		}
		defer b.Close()
		done := make(chan struct{}, 2)
		go func() { _, _ = io.Copy(b, c); done <- struct{}{} }()
		go func() { _, _ = io.Copy(c, b); done <- struct{}{} }()
		<-done
		return
	}
}

package tcpproxy

import (
	"bufio"
	"net"
	"testing"
)

// An echo server behind the proxy: reachable while up; while down an open
// connection is cut and a new one gets nothing; up again, it works.
func TestDownCutsAndUpRestores(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					_, _ = c.Write([]byte(line))
				}
			}()
		}
	}()
	p := Start(t, "127.0.0.1", "tcp", ln.Addr().String())
	echo := func() (string, error) {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			return "", err
		}
		defer func() { _ = c.Close() }()
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return "", err
		}
		return bufio.NewReader(c).ReadString('\n')
	}
	if got, err := echo(); got != "ping\n" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}
	held, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = held.Close() }()
	heldR := bufio.NewReader(held)
	if _, err := held.Write([]byte("hold\n")); err != nil {
		t.Fatal(err)
	}
	if got, err := heldR.ReadString('\n'); got != "hold\n" { // forwarded: the proxy holds it
		t.Fatalf("held connection: %q, %v", got, err)
	}
	p.Down()
	if got, err := echo(); err == nil && got != "" {
		t.Errorf("through the proxy while down: %q", got)
	}
	if _, err := heldR.ReadString('\n'); err == nil {
		t.Error("a connection held across Down was not cut")
	}
	p.Up()
	if got, err := echo(); got != "ping\n" {
		t.Fatalf("through the proxy after Up: %q, %v", got, err)
	}
}

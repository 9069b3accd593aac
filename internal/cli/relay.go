package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/internal/engine"
)

// maxRelayConns bounds what a relay spends on its users.
const maxRelayConns = 10_000

func relayCmd(g *globals) *cobra.Command {
	var (
		upstream string
		listen   []string
		data     string
		tlsOpts  tlsOptions
	)
	c := &cobra.Command{
		Use:   "relay --upstream HOST:PORT --listen tls://:443",
		Short: "Run a relay that carries friends' connections to a server",
		Long: `Run a relay, as anyone can for friends whose network blocks the server (like
WhatsApp's proxy). It accepts connections on censorship-resistant transports
and forwards the bytes to the server's plain tcp endpoint. It cannot read or
alter them: the Noise session runs end to end between the client and the
server. It keeps no logs of content and has no status page: to anyone
without its link it is an ordinary website (tls) or silence.

It prints a relay link; friends add it with: magpie relays add LINK`,
		Example: `  magpie relay --upstream chat.example.org:7443 --listen tls://:443
  magpie relay --upstream 203.0.113.7:7443 --listen tls://127.0.0.1:9443 --data ./relay-data`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if upstream == "" || len(listen) == 0 {
				return errors.New("--upstream and --listen are required")
			}
			if _, _, err := net.SplitHostPort(upstream); err != nil {
				return fmt.Errorf("--upstream: %w", err)
			}
			if err := os.MkdirAll(data, 0o700); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var lns []*listener
			defer func() {
				for _, ln := range lns {
					ln.Close()
				}
			}()
			for _, spec := range listen {
				ln, err := openListener(spec, data, tlsOpts)
				if err != nil {
					return err
				}
				lns = append(lns, ln)
			}
			if !g.json {
				fmt.Fprintf(g.stdout, "Magpie relay %s to %s\n", Version, upstream)
			}
			for _, ln := range lns {
				for _, a := range advertised([]net.Listener{ln}) {
					e := ln.template
					e.Address = a
					if g.json {
						if err := g.printJSON(map[string]string{"link": endpoints.FormatLink(e), "upstream": upstream}); err != nil {
							return err
						}
						continue
					}
					fmt.Fprintf(g.stdout, "Relay link (give it to friends; they run: magpie relays add LINK):\n%s\n", endpoints.FormatLink(e))
				}
			}
			return relay(ctx, lns, upstream, g)
		},
	}
	c.Flags().StringVar(&upstream, "upstream", "", "the server's tcp endpoint (host:port)")
	c.Flags().StringArrayVar(&listen, "listen", nil, "obfs://host:port or tls://host:port to accept friends on (repeatable)")
	c.Flags().StringVar(&data, "data", "magpie-relay", "relay data directory (its TLS certificate and secret)")
	c.Flags().StringVar(&tlsOpts.certFile, "tls-cert", "", "certificate file (PEM); default: a self-signed one, pinned through the link")
	c.Flags().StringVar(&tlsOpts.keyFile, "tls-key", "", "private key file (PEM)")
	c.Flags().StringVar(&tlsOpts.sni, "tls-sni", "", "server name clients send (default: the certificate's, or a generated cover name)")
	c.Flags().StringVar(&tlsOpts.fallback, "tls-fallback", "", "host:port of a real HTTPS website with the same certificate that gets every connection that is not a Magpie client")
	c.Flags().StringVar(&tlsOpts.decoyDir, "tls-decoy-dir", "", "without --tls-fallback: serve this static site instead of the generated one")
	g.addJSON(c)
	return c
}

// relay forwards every accepted connection to upstream until ctx ends.
func relay(ctx context.Context, lns []*listener, upstream string, g *globals) error {
	log := g.logger()
	slots := make(chan struct{}, maxRelayConns)
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	track := func(c net.Conn, on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			open[c] = true
		} else {
			delete(open, c)
		}
	}
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				select {
				case slots <- struct{}{}:
				default:
					c.Close() // full: drop rather than queue
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { <-slots }()
					track(c, true)
					defer track(c, false)
					defer c.Close()
					d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
					up, err := d.DialContext(ctx, "tcp", upstream)
					if err != nil {
						log.Warn("relay: upstream unreachable", "err", err)
						return
					}
					track(up, true)
					defer track(up, false)
					defer up.Close()
					done := make(chan struct{}, 2)
					go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
					go func() { io.Copy(c, up); c.Close(); done <- struct{}{} }()
					<-done
					<-done
				}()
			}
		}()
	}
	<-ctx.Done()
	for _, ln := range lns {
		ln.Close()
	}
	mu.Lock()
	for c := range open {
		c.Close()
	}
	mu.Unlock()
	wg.Wait()
	return nil
}

func relaysCmd(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "relays",
		Short: "Manage the relays and extra endpoints this client may use",
		Long: `Relays carry your connection to the server when your network blocks it.
A relay link (magpie-relay://…) comes from whoever runs the relay. It needs
no signature: your client still checks the server's key from the invite, so
a bad link can lead nowhere but never to an impostor.`,
		Example: "  magpie relays add 'magpie-relay://tls@198.51.100.2:443?secret=…'",
	}
	add := &cobra.Command{
		Use:     "add LINK",
		Short:   "Add a relay link",
		Example: "  magpie relays add 'magpie-relay://tls@198.51.100.2:443?cert=…&secret=…'",
		Args:    exactArgs(1),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			e, err := s.AddRelay(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(e)
			}
			fmt.Fprintf(g.stdout, "Added %s; it is tried with the server's own endpoints.\n", e.Key)
			return nil
		}),
	}
	list := &cobra.Command{
		Use:     "list",
		Short:   "List the endpoints this client dials, in the order it tries them",
		Example: "  magpie relays list --json",
		Args:    exactArgs(0),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, _ []string) error {
			eps, err := s.Endpoints(cmd.Context())
			if err != nil {
				return err
			}
			for _, e := range eps {
				if g.json {
					if err := g.printJSON(e); err != nil {
						return err
					}
					continue
				}
				fmt.Fprintf(g.stdout, "%s (priority %d)\n", e.Key, e.Priority)
			}
			return nil
		}),
	}
	g.addJSON(list)
	g.addJSON(add)
	root.AddCommand(add, list)
	return root
}

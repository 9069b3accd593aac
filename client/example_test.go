package client_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/link"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/store/sqlite"
)

// An application embeds the client: each user's device gets a home, the
// engine runs in the background, and the app sends and shows what the
// event stream says. Here a server runs in the same process too.
func Example_embed() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "magpie-example-")
	check(err)
	defer os.RemoveAll(dir)

	// The server: a key, an embedded store, a listener.
	st, err := sqlite.Open(filepath.Join(dir, "server.db"), sqlite.Options{})
	check(err)
	defer st.Close()
	key, err := link.GenerateKey(rand.Reader)
	check(err)
	srv, err := server.New(server.Config{Key: key, Store: st})
	check(err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() { srv.Shutdown(context.Background()); <-served }()
	inv := invite.Invite{ServerKey: key.Public, Addrs: []string{ln.Addr().String()}}

	// A device: Init once, then Open, Register and Run its engine.
	device := func(name string) (c *client.Client, stop func()) {
		var sealKey [32]byte // where the app keeps it: the OS keystore, say
		rand.Read(sealKey[:])
		opts := client.Options{Home: filepath.Join(dir, name), Unlocker: client.KeyUnlocker(sealKey)}
		check(client.Init(ctx, opts, inv))
		c, err := client.Open(ctx, opts)
		check(err)
		_, err = c.Register(ctx, name)
		check(err)
		runCtx, stopRun := context.WithCancel(ctx)
		ran := make(chan error, 1)
		go func() { ran <- c.Run(runCtx) }()
		return c, func() { stopRun(); check(<-ran); check(c.Close()) }
	}
	alice, stopAlice := device("alice")
	defer stopAlice()
	bob, stopBob := device("bob")
	defer stopBob()

	events := bob.Subscribe()
	defer events.Close()
	_, err = alice.Send(ctx, "bob", "the boat leaves at dawn")
	check(err)
	for {
		select {
		case ev := <-events.Events():
			if ev.Kind == client.EventMessage && !ev.Message.Outgoing {
				fmt.Printf("%s: %s\n", ev.Message.Peer, ev.Message.Text)
				return
			}
		case <-ctx.Done():
			log.Fatal("no message")
		}
	}
	// Output: alice: the boat leaves at dawn
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

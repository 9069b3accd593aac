package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/internal/atomicfile"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/link"
	"github.com/magpie-im/magpie/wire"
)

// Files in the server's data directory.
const (
	endpointsFileName = "endpoints.json" // operator-managed endpoints (magpie endpoints add|retire)
	inviteFileName    = "invite.txt"     // the current invite, rewritten when the list changes
)

// endpointsFile is what the operator manages; the server merges it with its
// own listeners and signs the result.
type endpointsFile struct {
	Version   uint64         `json:"version"`   // of the last list published
	Published string         `json:"published"` // hash of its content, to notice changes
	Added     []fileEndpoint `json:"added"`
	Retired   []string       `json:"retired"` // transport://address
}

type fileEndpoint struct {
	Transport string    `json:"transport"`
	Address   string    `json:"address"`
	SNI       string    `json:"sni,omitempty"`
	Front     string    `json:"front,omitempty"`
	Cert      string    `json:"cert,omitempty"`
	Secret    []byte    `json:"secret,omitempty"`
	Path      string    `json:"path,omitempty"`
	Priority  int       `json:"priority"`
	Expires   time.Time `json:"expires,omitzero"`
	Safe      bool      `json:"safe,omitempty"`
}

func (f fileEndpoint) endpoint() endpoints.Endpoint {
	return endpoints.Endpoint{Transport: f.Transport, Address: f.Address, SNI: f.SNI, Front: f.Front,
		Cert: f.Cert, Secret: f.Secret, Path: f.Path, Priority: f.Priority, Expires: f.Expires, Safe: f.Safe}
}

func readEndpointsFile(data string) (endpointsFile, error) {
	var f endpointsFile
	b, err := os.ReadFile(filepath.Join(data, endpointsFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return f, err
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("%s: %w", endpointsFileName, err)
	}
	return f, nil
}

func writeEndpointsFile(data string, f endpointsFile) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(data, endpointsFileName), append(b, '\n'), 0o600)
}

// publisher keeps the server's signed endpoint list current: the listeners'
// endpoints plus the operator's additions, less what was retired. It
// re-signs only when that content changes (the operator's edits are noticed
// by the file's modification time, checked at most once a second) and bumps
// the version, so clients pick up changes in band without any update.
type publisher struct {
	data     string
	key      link.KeyPair
	tcpAddrs []string // for the invite
	implicit []endpoints.Endpoint

	mu      sync.Mutex
	checked time.Time
	mtime   time.Time
	current *wire.SignedEndpointList
	invite  string
}

func newPublisher(data string, key link.KeyPair, implicit []endpoints.Endpoint, tcpAddrs []string) (*publisher, error) {
	p := &publisher{data: data, key: key, implicit: implicit, tcpAddrs: tcpAddrs}
	if err := p.refresh(time.Now()); err != nil {
		return nil, err
	}
	return p, nil
}

// Current implements server.Config.Endpoints.
func (p *publisher) Current() *wire.SignedEndpointList {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if now.Sub(p.checked) >= time.Second {
		p.checked = now
		if fi, err := os.Stat(filepath.Join(p.data, endpointsFileName)); err == nil && !fi.ModTime().Equal(p.mtime) {
			if err := p.refreshLocked(now); err != nil {
				// Keep serving the last good list.
				return p.current
			}
		}
	}
	return p.current
}

func (p *publisher) Invite() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.invite
}

func (p *publisher) refresh(now time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refreshLocked(now)
}

func (p *publisher) refreshLocked(now time.Time) error {
	f, err := readEndpointsFile(p.data)
	if err != nil {
		return err
	}
	var eps []endpoints.Endpoint
	for _, e := range p.implicit {
		// One the operator added again (to mark it safe, say) is theirs.
		added := slices.ContainsFunc(f.Added, func(a fileEndpoint) bool { return a.endpoint().Key() == e.Key() })
		if !added && !slices.Contains(f.Retired, e.Key()) {
			eps = append(eps, e)
		}
	}
	for _, a := range f.Added {
		if e := a.endpoint(); !slices.Contains(f.Retired, e.Key()) {
			eps = append(eps, e)
		}
	}
	content, _ := json.Marshal(eps)
	sum := sha256.Sum256(content)
	hash := hex.EncodeToString(sum[:])
	if hash != f.Published || f.Version == 0 {
		f.Version = max(f.Version+1, uint64(now.UnixMilli()))
		f.Published = hash
		if err := writeEndpointsFile(p.data, f); err != nil && !errors.Is(err, syscall.ENOSPC) {
			return err
		}
		// On a full disk the list is served from memory: its version is
		// a time, so the next one written is newer still.
	}
	signed, err := endpoints.Sign(endpoints.List{Version: f.Version, Issued: now, Endpoints: eps}, curve.PrivateKey(p.key.Private))
	if err != nil {
		return err
	}
	raw, err := proto.Marshal(signed)
	if err != nil {
		return err
	}
	var tcp []string
	for _, a := range p.tcpAddrs {
		if !slices.Contains(f.Retired, "tcp://"+a) {
			tcp = append(tcp, a)
		}
	}
	inv := invite.Invite{ServerKey: p.key.Public, Addrs: tcp, Endpoints: raw}
	if len(inv.Addrs) == 0 && len(eps) == 0 {
		return errors.New("every endpoint is retired: add one (magpie endpoints add)")
	}
	p.current, p.invite = signed, inv.String()
	if fi, err := os.Stat(filepath.Join(p.data, endpointsFileName)); err == nil {
		p.mtime = fi.ModTime()
	}
	if err := atomicfile.Write(filepath.Join(p.data, inviteFileName), []byte(p.invite+"\n"), 0o644); err != nil && !errors.Is(err, syscall.ENOSPC) {
		return err
	}
	return nil // on a full disk, the invite file is written once there is space
}

func endpointsCmd(g *globals) *cobra.Command {
	var data string
	root := &cobra.Command{
		Use:   "endpoints",
		Short: "Manage the server's signed endpoint list",
		Long: `The endpoint list tells clients every way to reach the server (transport,
address, TLS name and front, priority, expiry). The server signs it with its
long-term key; clients refresh it in band and keep the newest they verified,
so adding or retiring an endpoint needs no client update. A running server
picks up changes within a second; a new invite (magpie invite) carries them
to clients whose every known endpoint is blocked.`,
		Example: `  magpie endpoints list --data /var/lib/magpie
  magpie endpoints add --data /var/lib/magpie --transport obfs --address 203.0.113.9:443 --cert CERT
  magpie endpoints retire --data /var/lib/magpie tcp://203.0.113.7:7443`,
	}
	root.PersistentFlags().StringVar(&data, "data", "magpie-data", "server data directory")

	var e fileEndpoint
	var expiresIn time.Duration
	add := &cobra.Command{
		Use:     "add --transport T --address HOST:PORT",
		Short:   "Add an endpoint to the list",
		Example: "  magpie endpoints add --transport tls --address 198.51.100.4:443 --sni cdn.example.com --priority 5",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if e.Transport == "" || e.Address == "" {
				return errors.New("--transport and --address are required")
			}
			if _, err := invite.Parse(invite.Scheme + strings.Repeat("A", 43) + "@" + e.Address); err != nil {
				return fmt.Errorf("--address: %w", err)
			}
			if expiresIn > 0 {
				e.Expires = time.Now().Add(expiresIn)
			}
			f, err := readEndpointsFile(data)
			if err != nil {
				return err
			}
			key := e.endpoint().Key()
			f.Added = slices.DeleteFunc(f.Added, func(a fileEndpoint) bool { return a.endpoint().Key() == key })
			f.Added = append(f.Added, e)
			f.Retired = slices.DeleteFunc(f.Retired, func(r string) bool { return r == key })
			if err := writeEndpointsFile(data, f); err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]string{"added": key})
			}
			fmt.Fprintf(g.stdout, "Added %s. A running server publishes it within a second.\n", key)
			return nil
		},
	}
	add.Flags().StringVar(&e.Transport, "transport", "", "tcp, obfs or tls")
	add.Flags().StringVar(&e.Address, "address", "", "host:port clients dial")
	add.Flags().StringVar(&e.SNI, "sni", "", "tls: server name")
	add.Flags().StringVar(&e.Front, "front", "", "tls: HTTP Host header when fronting")
	add.Flags().StringVar(&e.Cert, "cert", "", "obfs: server cert; tls: SPKI pin")
	add.Flags().StringVar(&e.Path, "path", "", "tls: WebSocket path")
	add.Flags().IntVar(&e.Priority, "priority", 10, "lower is tried first")
	add.Flags().BoolVar(&e.Safe, "safe", false, "tcp: vouch that plain tcp is safe where this list goes (clients offered obfs, tls or relays use plain tcp only if marked so)")
	add.Flags().DurationVar(&expiresIn, "expires-in", 0, "retire automatically after this long (0: never)")

	retire := &cobra.Command{
		Use:     "retire TRANSPORT://HOST:PORT",
		Short:   "Remove an endpoint from the list",
		Example: "  magpie endpoints retire tcp://203.0.113.7:7443",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			if !strings.Contains(key, "://") {
				key = "tcp://" + key
			}
			f, err := readEndpointsFile(data)
			if err != nil {
				return err
			}
			f.Added = slices.DeleteFunc(f.Added, func(a fileEndpoint) bool { return a.endpoint().Key() == key })
			if !slices.Contains(f.Retired, key) {
				f.Retired = append(f.Retired, key)
			}
			if err := writeEndpointsFile(data, f); err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]string{"retired": key})
			}
			fmt.Fprintf(g.stdout, "Retired %s.\n", key)
			return nil
		},
	}
	list := &cobra.Command{
		Use:     "list",
		Short:   "Show operator-added and retired endpoints and the last published invite",
		Example: "  magpie endpoints list --json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := readEndpointsFile(data)
			if err != nil {
				return err
			}
			inv, _ := os.ReadFile(filepath.Join(data, inviteFileName))
			if g.json {
				return g.printJSON(map[string]any{"version": f.Version, "added": f.Added, "retired": f.Retired, "invite": strings.TrimSpace(string(inv))})
			}
			fmt.Fprintf(g.stdout, "published version %d\n", f.Version)
			for _, a := range f.Added {
				safe := ""
				if a.Safe {
					safe = ", safe"
				}
				fmt.Fprintf(g.stdout, "  added    %-32s priority %d%s\n", a.endpoint().Key(), a.Priority, safe)
			}
			for _, r := range f.Retired {
				fmt.Fprintf(g.stdout, "  retired  %s\n", r)
			}
			fmt.Fprintf(g.stdout, "(the server adds its own listeners; current invite: magpie invite --data %s)\n", data)
			return nil
		},
	}
	g.addJSON(list)
	g.addJSON(add)
	g.addJSON(retire)
	root.AddCommand(add, retire, list)
	return root
}

func inviteCmd(g *globals) *cobra.Command {
	var data, storeKind string
	var signup bool
	var uses int
	c := &cobra.Command{
		Use:   "invite [--signup [--uses N] [--store postgres://…]]",
		Short: "Print the server's current invite",
		Long: `Print the invite a server last published (with its signed endpoint list).
Give it to users whose every known endpoint is blocked: magpie init --invite
with it keeps their account and adds the new endpoints.

With --signup, the invite carries a new sign-up code, good for --uses new
accounts: what a server run with --signup invite asks for. The code is in
the invite only (the server keeps its hash); give each person their own.
For servers run with --store postgres://…, pass the same --store: the code
goes into that database and works on every server of the cluster.`,
		Example: "  magpie invite --data /var/lib/magpie\n  magpie invite --data /var/lib/magpie --signup --uses 20   # for a group of 20\n  magpie invite --data /var/lib/magpie --signup --store postgres://magpie@db/magpie   # for a cluster",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if storeKind != "" && !isPostgresURL(storeKind) {
				return usageError{errors.New("--store is a postgres:// URL, or not given for the codes in --data")}
			}
			if storeKind != "" && !signup {
				return usageError{errors.New("--store goes with --signup")}
			}
			b, err := os.ReadFile(filepath.Join(data, inviteFileName))
			if err != nil {
				return fmt.Errorf("no invite yet in %s: start the server once (magpie serve --data %s): %w", data, data, err)
			}
			text := strings.TrimSpace(string(b))
			if signup {
				inv, err := invite.Parse(text)
				if err != nil {
					return fmt.Errorf("the invite in %s: %w", data, err)
				}
				codes, closeCodes, err := openSignupCodes(storeKind, data, g.logger())
				if err != nil {
					return fmt.Errorf("sign-up codes: %w", err)
				}
				defer closeCodes()
				if inv.SignupCode, err = codes.Add(uses); err != nil {
					return err
				}
				text = inv.String()
			}
			if g.json {
				return g.printJSON(map[string]string{"invite": text})
			}
			fmt.Fprintln(g.stdout, text)
			return nil
		},
	}
	c.Flags().StringVar(&data, "data", "magpie-data", "server data directory")
	c.Flags().BoolVar(&signup, "signup", false, "add a new sign-up code to the invite (for a server run with --signup invite)")
	c.Flags().IntVar(&uses, "uses", 1, "with --signup: how many accounts the code may open")
	c.Flags().StringVar(&storeKind, "store", "", "with --signup: the postgres:// URL the servers were run with (--store), to add the code to the cluster's database; default: the codes in --data")
	g.addJSON(c)
	return c
}

package cli

import (
	"encoding/base64"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"rsc.io/qr"

	"github.com/magpie-im/magpie/internal/engine"
)

func verifyCmd(g *globals) *cobra.Command {
	var confirm bool
	var digits, scanned string
	c := &cobra.Command{
		Use:   "verify NAME [--confirm | --digits DIGITS | --scanned CODE]",
		Short: "Show the safety number with NAME, or confirm that it matches",
		Long: `Show the safety number (60 digits and a QR code) between you and NAME.
Compare it with NAME in person or over a channel you trust; if it matches,
nobody is intercepting your messages. Then confirm it, one of three ways:
  --confirm           after you looked at this number (magpie verify NAME)
  --digits DIGITS     type the digits NAME reads out (they must match)
  --scanned CODE      the base64 code of NAME's QR (it must match)
Magpie refuses --confirm for a number it has not shown you.

Once NAME is verified, Magpie refuses to send to them if their identity key
changes, until you verify again. Unverified contacts whose key changes get
a warning instead.`,
		Example: `  magpie verify bob
  magpie verify bob --confirm
  magpie verify bob --digits "12345 67890 …"`,
		Args: exactArgs(1),
		RunE: g.withSession(func(cmd *cobra.Command, s *engine.Session, args []string) error {
			ctx, name := cmd.Context(), args[0]
			if confirm || digits != "" || scanned != "" {
				v := engine.Verify{Digits: digits}
				if scanned != "" {
					b, err := base64.StdEncoding.DecodeString(scanned)
					if err != nil {
						return usageError{fmt.Errorf("--scanned: %w", err)}
					}
					v.Scanned = b
				}
				if err := s.Verify(ctx, name, v); err != nil {
					return withPeer(err, name)
				}
				if g.json {
					return g.printJSON(map[string]string{"user": name, "status": "verified"})
				}
				fmt.Fprintf(g.stdout, "%s is now verified.\n", name)
				return nil
			}
			sn, err := s.Safety(ctx, name)
			if err != nil {
				return withPeer(err, name)
			}
			if g.json {
				return g.printJSON(map[string]any{"user": sn.User, "safety_number": sn.Digits,
					"qr_payload": base64.StdEncoding.EncodeToString(sn.QR), "status": sn.Status})
			}
			status := map[string]string{"verified": "verified", "unverified": "not verified",
				"changed": "CHANGED since you verified it: compare again before sending"}[sn.Status]
			fmt.Fprintf(g.stdout, "Safety number with %s (%s):\n\n", name, status)
			for i := 0; i < len(sn.Digits); i += 30 {
				fmt.Fprintf(g.stdout, "    %s\n", groupDigits(sn.Digits[i:min(i+30, len(sn.Digits))], " "))
			}
			fmt.Fprintln(g.stdout)
			if err := drawQR(g.stdout, sn.QR); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "\nCompare the digits with %s (or scan each other's code). If they match:\n    %s\n", name, g.magpie("verify "+name+" --confirm"))
			return nil
		}),
	}
	c.Flags().BoolVar(&confirm, "confirm", false, "mark NAME verified: you compared the number shown and it matched")
	c.Flags().StringVar(&digits, "digits", "", "mark NAME verified if these are the digits of the safety number")
	c.Flags().StringVar(&scanned, "scanned", "", "mark NAME verified if this is their QR code's payload (base64)")
	c.MarkFlagsMutuallyExclusive("confirm", "digits", "scanned")
	g.addJSON(c)
	return c
}

// groupDigits splits digits into groups of five, as Signal shows them.
func groupDigits(d, sep string) string {
	var parts []string
	for i := 0; i < len(d); i += 5 {
		parts = append(parts, d[i:min(i+5, len(d))])
	}
	return strings.Join(parts, sep)
}

// drawQR draws payload as a QR code with Unicode half blocks: two module
// rows per text line, light modules drawn, dark ones blank, so it reads
// correctly on the usual dark terminal background. A four-module quiet zone
// surrounds it, as the QR standard asks.
func drawQR(w io.Writer, payload []byte) error {
	code, err := qr.Encode(string(payload), qr.M)
	if err != nil {
		return fmt.Errorf("drawing QR code: %w", err)
	}
	const quiet = 4
	n := code.Size
	light := func(x, y int) bool {
		if x < 0 || y < 0 || x >= n || y >= n {
			return true
		}
		return !code.Black(x, y)
	}
	var b strings.Builder
	for y := -quiet; y < n+quiet; y += 2 {
		b.WriteString("    ")
		for x := -quiet; x < n+quiet; x++ {
			top, bottom := light(x, y), light(x, y+1)
			switch {
			case top && bottom:
				b.WriteString("█")
			case top:
				b.WriteString("▀")
			case bottom:
				b.WriteString("▄")
			default:
				b.WriteString(" ")
			}
		}
		b.WriteByte('\n')
	}
	_, err = io.WriteString(w, b.String())
	return err
}

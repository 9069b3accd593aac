package cli

import (
	"encoding/base64"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"rsc.io/qr"

	"github.com/magpie-im/magpie/client"
)

func verifyCmd(g *globals) *cobra.Command {
	var confirm bool
	c := &cobra.Command{
		Use:   "verify NAME",
		Short: "Show the safety number with NAME, or confirm that it matches",
		Long: `Show the safety number (60 digits and a QR code) between you and NAME.
Compare it with NAME in person or over a channel you trust; if it matches,
nobody is intercepting your messages. Then run it again with --confirm.

Once NAME is verified, Magpie refuses to send to them if their identity key
changes, until you verify again. Unverified contacts whose key changes get
a warning instead.`,
		Example: `  magpie verify bob
  magpie verify bob --confirm`,
		Args: exactArgs(1),
		RunE: g.withClient(func(cmd *cobra.Command, cl *client.Client, args []string) error {
			sn, err := cl.SafetyNumber(cmd.Context(), args[0])
			if err != nil {
				return userError(err)
			}
			status := "not verified"
			switch {
			case sn.Contact.Pending != nil:
				status = "CHANGED since you verified it: compare again before sending"
			case sn.Contact.Verified:
				status = "verified"
			}
			if confirm {
				if err := cl.MarkVerified(cmd.Context(), args[0]); err != nil {
					return err
				}
				status = "verified"
			}
			if g.json {
				return g.printJSON(map[string]any{"user": args[0], "safety_number": sn.Digits,
					"qr_payload": base64.StdEncoding.EncodeToString(sn.Scannable), "status": status})
			}
			if confirm {
				fmt.Fprintf(g.stdout, "%s is now verified. Safety number: %s\n", args[0], groupDigits(sn.Digits, " "))
				return nil
			}
			fmt.Fprintf(g.stdout, "Safety number with %s (%s):\n\n", args[0], status)
			for i := 0; i < len(sn.Digits); i += 30 {
				fmt.Fprintf(g.stdout, "    %s\n", groupDigits(sn.Digits[i:min(i+30, len(sn.Digits))], " "))
			}
			fmt.Fprintln(g.stdout)
			if err := drawQR(g.stdout, sn.Scannable); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "\nCompare the digits with %s (or scan each other's code). If they match:\n    magpie verify %s --confirm\n", args[0], args[0])
			return nil
		}),
	}
	c.Flags().BoolVar(&confirm, "confirm", false, "mark NAME verified: you compared the safety number and it matched")
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

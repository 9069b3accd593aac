// Command magpie is the Magpie server and client. See `magpie --help`.
package main

import (
	"context"
	"os"

	"github.com/magpie-im/magpie/internal/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

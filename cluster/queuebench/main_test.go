package queuebench

import (
	"os"
	"testing"

	"github.com/magpie-im/magpie/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.MainNoLeaks(m)) }

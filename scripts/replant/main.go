// Command replant plants again, one at a time, the mutants a gremlins
// report lists (by default those that lived), runs the tests of the
// mutated file's package, and prints each verdict. It checks gremlins'
// own verdicts and proves that a new test kills its mutant:
//
//	go run ./scripts/replant mutation/cluster_natsbus.json cluster/natsbus
//	go run ./scripts/replant -status LIVED,"NOT COVERED" -only msg.go:239 report.json pkg
//
// The second argument is the package directory the report was made for
// (its file names are relative to it). Each mutated file is restored
// before the next mutant, and on Ctrl-C; run it on a clean tree anyway.
// A mutant that does not compile is reported as not viable.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"go/scanner"
	"go/token"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"time"
)

type report struct {
	Files []struct {
		FileName  string `json:"file_name"`
		Mutations []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
			Line   int    `json:"line"`
			Column int    `json:"column"`
		} `json:"mutations"`
	} `json:"files"`
}

// mutations maps a gremlins mutator and the token it finds to the token
// it puts in its place (gremlins' internal/engine/mappings.go).
var mutations = map[string]map[token.Token]token.Token{
	"ARITHMETIC_BASE":       {token.ADD: token.SUB, token.MUL: token.QUO, token.QUO: token.MUL, token.REM: token.MUL, token.SUB: token.ADD},
	"CONDITIONALS_BOUNDARY": {token.GEQ: token.GTR, token.GTR: token.GEQ, token.LEQ: token.LSS, token.LSS: token.LEQ},
	"CONDITIONALS_NEGATION": {token.EQL: token.NEQ, token.GEQ: token.LSS, token.GTR: token.LEQ, token.LEQ: token.GTR, token.LSS: token.GEQ, token.NEQ: token.EQL},
	"INCREMENT_DECREMENT":   {token.DEC: token.INC, token.INC: token.DEC},
	"INVERT_ASSIGNMENTS":    {token.ADD_ASSIGN: token.SUB_ASSIGN, token.MUL_ASSIGN: token.QUO_ASSIGN, token.QUO_ASSIGN: token.MUL_ASSIGN, token.SUB_ASSIGN: token.ADD_ASSIGN},
	"INVERT_BITWISE":        {token.AND: token.OR, token.OR: token.AND, token.XOR: token.AND, token.AND_NOT: token.AND, token.SHL: token.SHR, token.SHR: token.SHL},
	"INVERT_LOGICAL":        {token.LAND: token.LOR, token.LOR: token.LAND},
	"INVERT_LOOPCTRL":       {token.BREAK: token.CONTINUE, token.CONTINUE: token.BREAK},
	"INVERT_NEGATIVES":      {token.SUB: token.ADD},
}

func main() {
	statuses := flag.String("status", "LIVED", "comma-separated statuses of the mutants to replant")
	only := flag.String("only", "", "replant only mutants at this file:line (comma-separated)")
	timeout := flag.Duration("timeout", 10*time.Minute, "bound on one mutant's tests")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: replant [flags] report.json package-dir")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	data, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		fail(err)
	}
	var r report
	if err := json.Unmarshal(data, &r); err != nil {
		fail(fmt.Errorf("%s: %w", flag.Arg(0), err))
	}
	want := map[string]bool{}
	for _, s := range strings.Split(*statuses, ",") {
		want[s] = true
	}
	places := map[string]bool{}
	for _, p := range strings.Split(*only, ",") {
		if p != "" {
			places[p] = true
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	killed, lived := 0, 0
	for _, f := range r.Files {
		for _, m := range f.Mutations {
			place := fmt.Sprintf("%s:%d", f.FileName, m.Line)
			if !want[m.Status] || len(places) > 0 && !places[place] {
				continue
			}
			path := filepath.Join(flag.Arg(1), f.FileName)
			verdict, err := replant(ctx, path, m.Type, m.Line, m.Column, *timeout)
			if err != nil {
				fail(fmt.Errorf("%s:%d: %w", place, m.Column, err))
			}
			switch verdict {
			case "KILLED":
				killed++
			case "LIVED":
				lived++
			}
			fmt.Printf("%-11s %-22s %s:%d (gremlins: %s)\n", verdict, m.Type, place, m.Column, m.Status)
			if ctx.Err() != nil {
				os.Exit(130)
			}
		}
	}
	fmt.Printf("killed %d, lived %d\n", killed, lived)
}

// replant applies one mutation to path, runs its package's tests and
// restores the file.
func replant(ctx context.Context, path, kind string, line, col int, timeout time.Duration) (string, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	table, ok := mutations[kind]
	if !ok {
		return "", fmt.Errorf("mutator %s is not known here", kind)
	}
	fset := token.NewFileSet()
	file := fset.AddFile(path, -1, len(src))
	var s scanner.Scanner
	s.Init(file, src, nil, 0)
	var mutated []byte
	for {
		pos, tok, _ := s.Scan()
		if tok == token.EOF {
			break
		}
		p := fset.Position(pos)
		if p.Line != line || p.Column != col {
			continue
		}
		to, ok := table[tok]
		if !ok {
			return "", fmt.Errorf("%s does not change %s", kind, tok)
		}
		off := p.Offset
		mutated = append(append(append([]byte{}, src[:off]...), to.String()...), src[off+len(tok.String()):]...)
		break
	}
	if mutated == nil {
		return "", fmt.Errorf("no token at %d:%d", line, col)
	}
	info, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, mutated, info.Mode()); err != nil {
		return "", err
	}
	defer os.WriteFile(path, src, info.Mode())

	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(tctx, "go", "test", "-count=1", "-failfast", "./"+filepath.Dir(path))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	switch {
	case tctx.Err() != nil:
		return "TIMED OUT", nil
	case err == nil:
		return "LIVED", nil
	case strings.Contains(out.String(), "[build failed]") || strings.Contains(out.String(), "[setup failed]"):
		return "NOT VIABLE", nil
	default:
		return "KILLED", nil
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "replant:", err)
	os.Exit(1)
}

// Package pgkit holds what Magpie's PostgreSQL stores beside store/pgstore
// (blobstore/pgblobs, internal/signupcodes/pgcodes) share: goose
// migrations of their own schema, transactions retried after losing a
// deadlock or serialization conflict, and SQLSTATEs.
//
// Each store keeps its own migration set with its own goose version table,
// so that each can be migrated, and tested, without the others; they share
// goose's advisory lock, so processes that open at once migrate one at a
// time.
package pgkit

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// SQLSTATEs the stores branch on.
const (
	CodeSerialization = "40001"
	CodeDeadlock      = "40P01"
	CodeDiskFull      = "53100"
)

// SQLState returns err's SQLSTATE, or "" when it is not PostgreSQL's.
func SQLState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// Migrate brings the schema of fsys's goose migrations (SQL files at its
// root) up to date in the database of cc, recording versions in table,
// on a connection of its own (goose wants database/sql).
func Migrate(ctx context.Context, cc *pgx.ConnConfig, fsys fs.FS, table string, log *slog.Logger) error {
	db := stdlib.OpenDB(*cc.Copy())
	defer db.Close()
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys, goose.WithTableName(table),
		goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	res, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, r := range res {
		log.Info("postgres schema migrated", "table", table, "version", r.Source.Version, "file", r.Source.Path)
	}
	return nil
}

// MaxAttempts bounds InTx's runs of one transaction.
const MaxAttempts = 8

// InTx runs fn in a transaction on pool and commits it, running it again
// from the start when PostgreSQL aborted it for a deadlock or a
// serialization failure (another transaction, maybe of another process,
// won). fn must reset whatever it filled in on an earlier attempt. The
// error is fn's or the database's, unwrapped: the caller adds context.
func InTx(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger, what string, fn func(pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, pool, fn)
		c := SQLState(err)
		if err == nil || c != CodeSerialization && c != CodeDeadlock || attempt == MaxAttempts {
			return err
		}
		log.Debug("postgres: transaction retried", "op", what, "attempt", attempt, "err", err)
		// Jittered, growing backoff so that the two losers of a deadlock
		// do not collide again at once.
		d := time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 6)))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
}

// Pool parses url, migrates the schema of fsys (see Migrate) and connects
// a pool. maxConns of 0 keeps pgxpool's default (or the URL's
// pool_max_conns).
func Pool(ctx context.Context, url string, maxConns int32, fsys fs.FS, table string, log *slog.Logger) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	if err := Migrate(ctx, cfg.ConnConfig, fsys, table, log); err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// What these stores confirm (an Append, a spent code) must survive a
	// crash of the database server too.
	var sc string
	if err := pool.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&sc); err != nil {
		pool.Close()
		return nil, err
	}
	if sc == "off" {
		pool.Close()
		return nil, errors.New("the server has synchronous_commit=off, so a commit it acknowledges can be lost; set it to on (or local, remote_write, remote_apply)")
	}
	return pool, nil
}

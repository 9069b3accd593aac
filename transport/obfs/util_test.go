package obfs

import crand "crypto/rand"

type cryptoReader struct{}

func (cryptoReader) Read(p []byte) (int, error) { return crand.Read(p) }

package wire

// Regenerating needs protoc (Debian: apt-get install protobuf-compiler); the
// Go plugin version is pinned by go.mod's tool directive.
//go:generate protoc --plugin=protoc-gen-go=../scripts/protoc-gen-go --go_out=. --go_opt=paths=source_relative wire.proto

// Package content is the client-to-client message format: what an envelope
// payload holds once the end-to-end layer has decrypted it.
package content

//go:generate protoc --plugin=protoc-gen-go=../scripts/protoc-gen-go --go_out=. --go_opt=paths=source_relative content.proto

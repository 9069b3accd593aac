package group

//go:generate protoc --plugin=protoc-gen-go=../scripts/protoc-gen-go --go_out=. --go_opt=paths=source_relative group.proto

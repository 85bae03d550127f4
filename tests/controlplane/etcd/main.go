// The etcd server binary: etcd's own entry point, built from the go.etcd.io/etcd/server/v3
// module so the test kit needs nothing but the Go module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }

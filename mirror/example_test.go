package mirror_test

import (
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"

	"github.com/pmemgo/pmemgo/heap"
	"github.com/pmemgo/pmemgo/mirror"
)

// Example replicates a pool to a replica server on loopback, in sync mode:
// once Update returns, the commit is durable on the replica.
func Example() {
	dir, err := os.MkdirTemp("", "mirror-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// The replica server; `pmemctl replica serve` runs the same. Plain TCP
	// keeps the example short; a deployment sets ServerOptions.TLS and
	// Options.TLS (certificates from `pmemctl cert`) instead of Insecure.
	srv, err := mirror.NewServer(mirror.ServerOptions{Dir: filepath.Join(dir, "replica"), Insecure: true})
	if err != nil {
		log.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(l)

	// The primary.
	h, err := heap.Open(filepath.Join(dir, "app.pool"), &heap.Options{Size: 4 << 20})
	if err != nil {
		log.Fatal(err)
	}
	m, err := mirror.Start(h, mirror.Options{Replicas: []string{l.Addr().String()}, Mode: mirror.Sync, Insecure: true})
	if err != nil {
		log.Fatal(err)
	}
	type Counter struct{ N uint64 }
	err = h.Update(func(tx *heap.Tx) error {
		c, err := heap.Root[Counter](tx)
		if err != nil {
			return err
		}
		return heap.Set(tx, &c.N, 42)
	})
	if err != nil {
		log.Fatal(err)
	}
	st := m.Status()[0]
	fmt.Println(st.State, "epoch", st.Epoch, "acknowledged", st.Acked == m.Seq())

	// Closing the heap closes the mirror too.
	h.Close()
	srv.Close()
	pools, err := mirror.ReadDirStatus(filepath.Join(dir, "replica"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(pools), "replicated pool at epoch", pools[0].Epoch)
	// Output:
	// streaming epoch 1 acknowledged true
	// 1 replicated pool at epoch 1
}

package remote_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/internal/certs"
	"github.com/pmemgo/pmemgo/internal/tlstesting"
	"github.com/pmemgo/pmemgo/remote"
)

// startTLSNode starts a node process serving mutual TLS with the
// deployment's server certificate, and policy if it is not nil. The node
// runs in a process of its own: in the test's, a collection that stops
// the world while a goroutine waits in a fault on a pool it serves would
// never end.
func startTLSNode(t *testing.T, d *tlstesting.Deployment, policy *remote.Policy) *nodeProc {
	t.Helper()
	f := d.WriteFiles(t, t.TempDir(), d.Replica)
	env := []string{"REMOTE_TEST_TLS=" + strings.Join([]string{f.CA, f.Cert, f.Key}, string(filepath.ListSeparator))}
	if policy != nil {
		b, err := json.Marshal(policy)
		require.NoError(t, err)
		env = append(env, "REMOTE_TEST_POLICY="+string(b))
	}
	return startNode(t, t.TempDir(), "127.0.0.1:0", env...)
}

// TestTLS runs a pool over mutual TLS, the agent process loading the
// client's files itself, and checks that a client without a certificate
// of the CA is refused.
func TestTLS(t *testing.T) {
	d := tlstesting.Default(t)
	url := startTLSNode(t, d, nil).url("tls")

	files := d.WriteFiles(t, t.TempDir(), d.Client)
	dir := t.TempDir()
	opts := &remote.Options{Backup: filepath.Join(dir, "a.backup"), Size: 4 << 20,
		TLS: remote.TLSFiles{CA: files.CA, Cert: files.Cert, Key: files.Key}}
	h, err := remote.Open(url, opts)
	require.NoError(t, err)
	build(t, h, 20)
	require.NoError(t, h.Close())
	opts = &remote.Options{Backup: filepath.Join(dir, "b.backup"),
		TLS: remote.TLSFiles{CA: files.CA, Cert: files.Cert, Key: files.Key}}
	h, err = remote.Open(url, opts)
	require.NoError(t, err)
	verify(t, h, 20)
	require.NoError(t, h.Close())

	_, err = remote.Open(url, &remote.Options{Backup: filepath.Join(dir, "c.backup"), Insecure: true})
	assert.Error(t, err, "plain TCP to a TLS node")
	other, err := tlstesting.New()
	require.NoError(t, err)
	stranger := other.WriteFiles(t, t.TempDir(), other.Client)
	_, err = remote.Open(url, &remote.Options{Backup: filepath.Join(dir, "d.backup"),
		TLS: remote.TLSFiles{CA: stranger.CA, Cert: stranger.Cert, Key: stranger.Key}})
	assert.Error(t, err, "a certificate of another CA")
	_, err = remote.Open(url, &remote.Options{Backup: filepath.Join(dir, "e.backup")})
	assert.Error(t, err, "neither TLS files nor Insecure")
}

// TestPolicy lets the client identity write one region and the primary
// identity only read it: the reader can download it but not open it for
// writing, and nobody may create a region the policy does not name. Only
// the replica identity, which may read every region, may read the node's
// status and scrub it.
func TestPolicy(t *testing.T) {
	d := tlstesting.Default(t)
	node := startTLSNode(t, d, &remote.Policy{
		Writers: map[string][]string{tlstesting.ClientName: {"mine"}},
		Readers: map[string][]string{tlstesting.PrimaryName: {"mine"}, tlstesting.ReplicaName: {"*"}},
	})
	base := node.url("")
	dir := t.TempDir()
	writer := d.WriteFiles(t, t.TempDir(), d.Client)
	reader := d.WriteFiles(t, t.TempDir(), d.Primary)
	wfiles := remote.TLSFiles{CA: writer.CA, Cert: writer.Cert, Key: writer.Key}
	rfiles := remote.TLSFiles{CA: reader.CA, Cert: reader.Cert, Key: reader.Key}

	h, err := remote.Open(base+"mine", &remote.Options{Backup: filepath.Join(dir, "a"), Size: 4 << 20, TLS: wfiles})
	require.NoError(t, err)
	build(t, h, 5)
	require.NoError(t, h.Close())
	_, err = remote.Open(base+"theirs", &remote.Options{Backup: filepath.Join(dir, "b"), Size: 4 << 20, TLS: wfiles})
	assert.ErrorIs(t, err, remote.ErrDenied)

	_, err = remote.Open(base+"mine", &remote.Options{Backup: filepath.Join(dir, "c"), TLS: rfiles})
	assert.ErrorIs(t, err, remote.ErrDenied)
	rcfg, err := certs.LoadTLS(reader.CA, reader.Cert, reader.Key, false)
	require.NoError(t, err)
	f, err := os.Create(filepath.Join(dir, "copy"))
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, remote.Download(t.Context(), base+"mine", rcfg, f))
	assert.ErrorIs(t, remote.Download(t.Context(), base+"theirs", rcfg, f), remote.ErrDenied)

	_, err = remote.ScrubNode(t.Context(), node.addr, rcfg)
	assert.ErrorIs(t, err, remote.ErrDenied, "a reader of one region may not scrub")
	_, err = remote.QueryStatus(t.Context(), node.addr, rcfg)
	assert.ErrorIs(t, err, remote.ErrDenied, "nor read the status")
	ops := d.WriteFiles(t, t.TempDir(), d.Replica)
	ocfg, err := certs.LoadTLS(ops.CA, ops.Cert, ops.Key, false)
	require.NoError(t, err)
	problems, err := remote.ScrubNode(t.Context(), node.addr, ocfg)
	require.NoError(t, err)
	assert.Empty(t, problems)
	st, err := remote.QueryStatus(t.Context(), node.addr, ocfg)
	require.NoError(t, err)
	assert.Len(t, st.Regions, 1)
}

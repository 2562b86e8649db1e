package device_test

import (
	"errors"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/device"
)

// countingMapper is a Mapper that counts its calls and refuses them.
type countingMapper struct{ calls int }

var errCounted = errors.New("counted")

func (m *countingMapper) Map(*os.File, int, device.MapRequest) (device.Device, error) {
	m.calls++
	return nil, errCounted
}

// TestRegisterPrivate checks that Private.Map of a registered file, by
// any open of it, goes to the registered Mapper until unregistered, and
// that other files are mapped as before.
func TestRegisterPrivate(t *testing.T) {
	dir := t.TempDir()
	f, other := newFile(t, dir, poolSize), newFile(t, dir, poolSize)
	m := &countingMapper{}
	unregister, err := device.RegisterPrivate(f, m)
	require.NoError(t, err)
	_, err = device.RegisterPrivate(f, m)
	assert.Error(t, err, "a file is registered once")

	again, err := os.Open(f.Name())
	require.NoError(t, err)
	defer again.Close()
	_, err = device.Private{}.Map(again, poolSize, device.MapRequest{})
	assert.ErrorIs(t, err, errCounted)
	assert.Equal(t, 1, m.calls)

	d, err := device.Private{}.Map(other, poolSize, device.MapRequest{})
	require.NoError(t, err)
	require.NoError(t, d.Close())

	unregister()
	unregister()
	d, err = device.Private{}.Map(again, poolSize, device.MapRequest{})
	require.NoError(t, err)
	require.NoError(t, d.Close())
	assert.Equal(t, 1, m.calls)
}

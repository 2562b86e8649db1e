package main

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmemgo/pmemgo/internal/layout"
)

func TestVersion(t *testing.T) {
	out, stderr, code := pmemctl(t, "version")
	require.Equal(t, exitOK, code)
	assert.Empty(t, stderr)
	assert.Contains(t, out, fmt.Sprintf("pool format version %d\n", layout.Version))
	assert.Contains(t, out, runtime.Version())
}

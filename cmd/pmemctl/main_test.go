package main

import (
	"bytes"
	"os"
	"testing"

	"github.com/pmemgo/pmemgo/remote"
)

// TestMain lets the test binary stand in for pmemctl: demo re-executes
// os.Executable(), which under `go test` is this binary, with PMEMCTL_CHILD
// set and pmemctl's arguments. Such a run executes the command line and
// exits instead of running the tests.
func TestMain(m *testing.M) {
	remote.AgentMain()
	if os.Getenv(childEnv) == "1" {
		os.Exit(run(newRootCmd(), os.Args[1:]))
	}
	os.Exit(m.Run())
}

// pmemctl runs the real root command with args and returns its output, its
// error output and its exit code.
func pmemctl(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCmd()
	root.SetOut(&out)
	root.SetErr(&errOut)
	code = run(root, args)
	t.Logf("pmemctl %v: exit %d\n%s%s", args, code, out.String(), errOut.String())
	return out.String(), errOut.String(), code
}

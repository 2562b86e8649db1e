package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK = 0
	// exitUsage is for a command line that cannot be run: an unknown
	// command or flag, a missing argument, an invalid flag value.
	exitUsage = 1
	// exitProblems is for a command that ran and found something wrong: a
	// pool with problems, a demo whose verification failed.
	exitProblems = 2
	// exitIO is for a command that could not do its job: the file is not a
	// pool, cannot be read, or an operation on it failed.
	exitIO = 3
)

// exitError is an error that carries the exit code it should end the
// process with.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func (e *exitError) Unwrap() error { return e.err }

func usageError(err error) error    { return &exitError{code: exitUsage, err: err} }
func problemsError(err error) error { return &exitError{code: exitProblems, err: err} }

// exitCode returns the exit code for err. Errors without one come from
// cobra's parsing of the command line (commands built with poolCommand give
// their own errors a code), so they are usage errors.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	if e, ok := errors.AsType[*exitError](err); ok {
		return e.code
	}
	return exitUsage
}

// poolCommand adapts the body of a command that works on pools: an error it
// returns without an exit code is an I/O or pool error, not a usage error.
func poolCommand(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := fn(cmd, args)
		if err == nil {
			return nil
		}
		if _, ok := errors.AsType[*exitError](err); ok {
			return err
		}
		return &exitError{code: exitIO, err: err}
	}
}

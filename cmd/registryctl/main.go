// Command registryctl is the registry's command line for operators: it
// stores and fetches objects, holds leases, lists and inspects what a
// registryd holds, revokes leases, forces collections and watches
// lifecycle events. It is a thin layer over the gRPC API; every command's
// json and yaml output is the API's own messages.
//
// Exit status: 0 success; 1 error; 2 bad usage; 3 the object or lease is
// not found (collected, deleted, unknown, or from an earlier run);
// 4 registryd is unreachable, not answering or not serving.
package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes; README.md lists them, keep the two in step.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitNotFound    = 3
	exitUnavailable = 4
)

func main() {
	// An interrupt ends the commands that run until interrupted (hold,
	// watch, put --hold) cleanly; for the others it cancels the call.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns its exit status. Errors are
// printed on one line to stderr, prefixed with "registryctl: ".
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := execute(ctx, root)
	a.close()
	if err == nil {
		return exitOK
	}
	msg, code := a.describe(err)
	io.WriteString(stderr, "registryctl: "+msg+"\n")
	return code
}

// execute runs the command line and names the command in usage errors,
// for the pointer to its help.
func execute(ctx context.Context, root *cobra.Command) error {
	cmd, err := root.ExecuteContextC(ctx)
	var usage *usageError
	if errors.As(err, &usage) && usage.cmd == "" && cmd != nil {
		usage.cmd = cmd.CommandPath()
	}
	return err
}

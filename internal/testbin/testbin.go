// Package testbin builds the module's binaries for end-to-end tests, once
// per test binary, so that e2e and e2e/robust run what users run.
package testbin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Binary is one program to build: Name is the file it becomes, Args what
// follows `go build -o FILE` (flags, then the package), and Path is set to
// the built file.
type Binary struct {
	Path *string
	Name string
	Args []string
}

// Build builds every binary into a new temporary directory, from the
// module's root, within timeout. The caller removes the directory it
// returns (after its tests have run). An error says which build failed
// and carries its output.
func Build(prefix string, timeout time.Duration, bins ...Binary) (dir string, err error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	dir, err = os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, b := range bins {
		*b.Path = filepath.Join(dir, b.Name)
		args := append([]string{"build", "-o", *b.Path}, b.Args...)
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
		}
	}
	return dir, nil
}

// ModuleRoot finds the directory of go.mod, from the working directory
// (a test's package directory) upwards.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for range 16 {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", errors.New("no go.mod found above the working directory")
}

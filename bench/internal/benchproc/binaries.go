package benchproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Portcullis returns path, or, when path is "", builds ./cmd/registry of
// the module in the current directory into dir and returns the binary.
func Portcullis(ctx context.Context, path, dir string, progress func(string, ...any)) (string, error) {
	if path != "" {
		return path, nil
	}
	root, err := RepoRoot(ctx)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "portcullis")
	progress("building %s", bin)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/registry")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/registry: %w\n%s", err, out)
	}
	return bin, nil
}

// ToolsBin is the directory scripts/install-tools.sh installs the pinned
// tools into: $PORTCULLIS_TOOLS/bin, else ~/.cache/portcullis-tools/bin.
func ToolsBin() (string, error) {
	tools := os.Getenv("PORTCULLIS_TOOLS")
	if tools == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		tools = filepath.Join(home, ".cache", "portcullis-tools")
	}
	return filepath.Join(tools, "bin"), nil
}

// Tool returns path, or, when path is "", the tool name in ToolsBin. It
// never builds the tool: it returns an error naming the script to run when
// the binary is missing.
func Tool(path, name string) (string, error) {
	if path == "" {
		dir, err := ToolsBin()
		if err != nil {
			return "", err
		}
		path = filepath.Join(dir, name)
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("%s: %w (scripts/install-tools.sh builds the pinned version)", name, err)
	}
	return path, nil
}

// RepoRoot is the directory of the main module's go.mod.
func RepoRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the Portcullis module: run from the repository root")
	}
	return filepath.Dir(mod), nil
}

// FreePort asks the kernel for a free loopback port.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

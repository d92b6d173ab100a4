// Command release packages a release build of device-agent as a
// vk-fleet-agent .deb (see internal/debpkg; the device's fleetctl is a link
// to device-agent, the operator's fleetctl is not in the package);
// hack/release.sh builds the binaries and runs it:
//
//	go run ./hack/release --version v0.2.0 --bin-dir dist/linux-arm64 --goarch arm64 --out dist
//
// It prints the path of the package it wrote.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/vk-fleet/vk-fleet/internal/debpkg"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func run() error {
	var c debpkg.Config
	var binDir, out string
	flag.StringVar(&c.Version, "version", "", "vk-fleet version the binaries are stamped with (v1.2.3, or git describe's)")
	flag.StringVar(&c.GOARCH, "goarch", "", "GOARCH of the binaries: amd64, arm64 or arm (GOARM=7)")
	flag.StringVar(&binDir, "bin-dir", "", "directory holding device-agent")
	flag.StringVar(&out, "out", "dist", "directory to write the package to")
	flag.Parse()
	if c.Version == "" || c.GOARCH == "" || binDir == "" {
		return errors.New("--version, --goarch and --bin-dir are required")
	}
	c.AgentBinary = filepath.Join(binDir, "device-agent")
	// Reproducible packages: SOURCE_DATE_EPOCH (hack/release.sh sets the
	// commit time) dates every file.
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
		}
		c.MTime = time.Unix(sec, 0).UTC()
	}
	name, err := debpkg.FileName(c.Version, c.GOARCH)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", out, err)
	}
	path := filepath.Join(out, name)
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("creating package file: %w", err)
	}
	if err := debpkg.Build(f, c); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	fmt.Println(path)
	return nil
}

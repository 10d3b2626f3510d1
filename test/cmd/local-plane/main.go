// Command local-plane starts (up) and stops (down) the local control plane with kubehistory wired in,
// for the demo and for exploring by hand. Its processes outlive the command; down stops only those whose
// pid files up wrote.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kubehistory/kubehistory/test/framework"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: local-plane up|down [--dir DIR]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", ".demo", "folder for the plane's state, logs and kubeconfigs")
	_ = fs.Parse(os.Args[2:])
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fail(err)
	}
	switch os.Args[1] {
	case "up":
		fail(up(abs))
	case "down":
		stopped, err := framework.StopPIDFiles(filepath.Join(abs, "plane"))
		for _, s := range stopped {
			fmt.Println("stopped", s)
		}
		fail(err)
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}

func up(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "plane")); err == nil {
		if stopped, _ := framework.StopPIDFiles(filepath.Join(dir, "plane")); len(stopped) > 0 {
			fmt.Println("stopped the previous run:", stopped)
		}
		if err := os.RemoveAll(filepath.Join(dir, "plane")); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	fmt.Println("==> starting etcd and kube-apiserver (the first run builds them: ~10 minutes)")
	plane, err := framework.Start(ctx, framework.Config{Dir: filepath.Join(dir, "plane"), Detach: true, Log: os.Stdout})
	if err != nil {
		return err
	}
	fmt.Println("==> building and starting kubehistory-apiserver, registering its APIService")
	kh, err := plane.InstallKubehistory(ctx, framework.InstallOptions{Detach: true})
	if err != nil {
		plane.Stop()
		return err
	}
	env := fmt.Sprintf("export KUBECONFIG=%s\nKUBEHISTORY_DATA_DIR=%s\nKUBEHISTORY_PORT=%d\n",
		plane.AdminKubeconfig, filepath.Join(kh.Dir, "data"), kh.Port)
	if err := os.WriteFile(filepath.Join(dir, "env"), []byte(env), 0o600); err != nil {
		return err
	}
	fmt.Printf("==> up. Admin kubeconfig: %s (also in %s)\n", plane.AdminKubeconfig, filepath.Join(dir, "env"))
	return nil
}

func fail(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "local-plane:", err)
		os.Exit(1)
	}
}

package testenv

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// script is a server one of the project's scripts/ runs in the foreground (the Flink
// job server, Kafka), in a process group of its own so that it stops whole.
type script struct {
	name string
	cmd  *exec.Cmd
}

// startScript runs scripts/name with args and more environment variables (KEY=VALUE),
// its stderr into log, and passes each line it prints on stdout to ready until ready
// says the server is up. It waits at most limit for that; a script that exits first
// is an error at once.
func startScript(log io.Writer, env []string, limit time.Duration, ready func(line string) bool, name string, args ...string) (*script, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(root, "scripts", name), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &script{name: name, cmd: cmd}
	up := make(chan bool, 1)
	go func() {
		for sc := bufio.NewScanner(out); sc.Scan(); {
			if ready(sc.Text()) {
				up <- true
				io.Copy(io.Discard, out) // the pipe must not fill
				return
			}
		}
		up <- false
	}()
	select {
	case ok := <-up:
		if !ok {
			s.stop()
			return nil, fmt.Errorf("scripts/%s exited before it was ready: %v", name, cmd.ProcessState)
		}
		return s, nil
	case <-time.After(limit):
		s.stop()
		return nil, fmt.Errorf("scripts/%s was not ready within %v", name, limit)
	}
}

// stop kills the script and everything it started.
// stop ends the script and what it started: SIGTERM, so that they clean up after
// themselves (the job server's staged artifacts), then SIGKILL after stopWait.
func (s *script) stop() {
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(stopWait):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

const stopWait = 15 * time.Second

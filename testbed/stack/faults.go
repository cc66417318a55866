package stack

import (
	"fmt"
	"syscall"
	"time"
)

// Fault helpers for long runs (testbed/soak). They only wrap what the
// stack already keeps; nothing here changes how the stack starts.

// StopAgentSignal stops the agent process with sig (SIGTERM: a clean
// shutdown; SIGKILL: a crash) and waits until it is gone, sending SIGKILL
// after grace. StartAgent starts it again. Stopping an agent that is not
// running is a no-op.
func (s *Stack) StopAgentSignal(sig syscall.Signal, grace time.Duration) error {
	if s.agent == nil {
		return fmt.Errorf("stack: no agent")
	}
	err := s.agent.stop(sig, grace)
	s.logf("stack: agent stopped (%v)", sig)
	return err
}

// AgentRunning reports whether the agent process is alive.
func (s *Stack) AgentRunning() bool { return s.agent != nil && s.agent.running() }

// BrokerRunning reports whether the broker process is alive.
func (s *Stack) BrokerRunning() bool { return s.broker != nil && s.broker.running() }

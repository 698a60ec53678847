package bridge

import "testing"

// Once stopped, the gate sends nothing (the announcer is not touched).
func TestAdvGateStopped(t *testing.T) {
	g := &advGate{}
	g.stop()
	if stopped, err := g.send(nil); !stopped || err != nil {
		t.Fatalf("send after stop: stopped %v, err %v", stopped, err)
	}
}

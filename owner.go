package bridge

import "github.com/nlbridge/bridge/internal/kern"

// selfOwner identifies this process in records of objects it is building.
func selfOwner(k kern.Kernel) owner {
	pid := k.Self()
	return owner{PID: pid, Start: k.StartTime(pid)}
}

// alive reports whether the owner process still runs. Processes that share
// records must share a PID namespace (as CNI plugins and their runtime do).
func (o owner) alive(k kern.Kernel) bool {
	st := k.StartTime(o.PID)
	return st != 0 && st == o.Start
}

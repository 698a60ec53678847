package bridge

import (
	"bytes"
	"os"
	"strconv"
)

// selfOwner identifies this process in records of objects it is building.
func selfOwner() owner {
	pid := os.Getpid()
	return owner{PID: pid, Start: startTime(pid)}
}

// alive reports whether the owner process still runs. Processes that share
// records must share a PID namespace (as CNI plugins and their runtime do).
func (o owner) alive() bool {
	st := startTime(o.PID)
	return st != 0 && st == o.Start
}

// startTime is field 22 of /proc/PID/stat: when the process started, in
// clock ticks after boot; 0 if there is no such process.
func startTime(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := bytes.Fields(b[i+1:]) // f[0] is field 3
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(string(f[19]), 10, 64)
	return v
}

package main

import (
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/prometheus/procfs"
)

// cpuByCommand is the CPU time (user and system) this process and its descendants
// (kube-apiserver, etcd, PostgreSQL, the token server, the manager) have used so
// far, by command name: what each process of the benchmark costs, on a machine
// whose cores they share.
func cpuByCommand() map[string]time.Duration {
	type proc struct {
		ppid int
		comm string
		cpu  time.Duration
	}
	procs := map[int]proc{}
	all, _ := procfs.AllProcs()
	for _, p := range all {
		st, err := p.Stat()
		if err != nil {
			continue
		}
		procs[p.PID] = proc{ppid: st.PPID, comm: st.Comm, cpu: time.Duration(st.CPUTime() * float64(time.Second))}
	}
	self := os.Getpid()
	ours := func(pid int) bool {
		for range 64 {
			if pid == self {
				return true
			}
			p, ok := procs[pid]
			if !ok || p.ppid == 0 {
				return false
			}
			pid = p.ppid
		}
		return false
	}
	out := map[string]time.Duration{}
	for pid, p := range procs {
		if ours(pid) {
			out[p.comm] += p.cpu
		}
	}
	return out
}

// printCPU prints the CPU each command used between before and after, per client
// and as a share of the elapsed time (2 cores: 200 %).
func printCPU(before, after map[string]time.Duration, elapsed time.Duration, clients int) {
	var names []string
	var total time.Duration
	for name, d := range after {
		if d-before[name] > 0 {
			names = append(names, name)
			total += d - before[name]
		}
	}
	sort.Slice(names, func(i, j int) bool { return after[names[i]]-before[names[i]] > after[names[j]]-before[names[j]] })
	fmt.Printf("CPU until all Ready: %.1f s, %.2f ms per client, %.0f %% of one core\n", total.Seconds(),
		float64(total.Microseconds())/1000/float64(clients), 100*total.Seconds()/elapsed.Seconds())
	for _, name := range names {
		d := after[name] - before[name]
		fmt.Printf("  %-40s %6.1f s  %5.2f ms per client  %4.0f %%\n", name, d.Seconds(),
			float64(d.Microseconds())/1000/float64(clients), 100*d.Seconds()/elapsed.Seconds())
	}
}

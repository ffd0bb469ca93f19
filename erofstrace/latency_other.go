//go:build !(386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

package erofstrace

import (
	"runtime"

	"github.com/cilium/ebpf"
	"github.com/erofsd/erofsd/internal/hostcap"
)

// loadLatency stands in for the bpf2go loader where the program is not
// built: only little-endian objects are generated (see gen.go).
func loadLatency() (*ebpf.CollectionSpec, error) {
	return nil, &hostcap.Missing{What: whatLatency, Why: "no BPF object built for " + runtime.GOARCH + " (big-endian)"}
}

// latencyHist is the value of the devs map (see latency_bpfel.go).
type latencyHist struct {
	SumNs uint64
	Slots [32]uint64
}

package erofstrace

// The BPF programs are compiled once and committed, with their Go
// bindings (trace_bpfel.go, trace_bpfel.o; latency_bpfel.go,
// latency_bpfel.o), so that building erofsd needs no clang. After
// changing bpf/trace.c or bpf/latency.c, regenerate with
//
//	go generate ./erofstrace
//
// The committed objects were built with Debian clang version 14.0.6 and
// llvm-strip 14 (Debian 12's clang and llvm packages). Only the
// little-endian target is generated: it covers amd64 and arm64 (and the
// other little-endian architectures); elsewhere Open returns
// ErrUnsupported (OpenLatency too).
//
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel trace bpf/trace.c -- -Wall -Werror
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel latency bpf/latency.c -- -Wall -Werror

package erofstrace

// The BPF program is compiled once and committed, with its Go bindings
// (trace_bpfel.go, trace_bpfel.o), so that building erofsd needs no clang.
// After changing bpf/trace.c, regenerate with
//
//	go generate ./erofstrace
//
// The committed object was built with Debian clang version 14.0.6 and
// llvm-strip 14 (Debian 12's clang and llvm packages). Only the
// little-endian target is generated: it covers amd64 and arm64 (and the
// other little-endian architectures); elsewhere Open returns
// ErrUnsupported.
//
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel trace bpf/trace.c -- -Wall -Werror

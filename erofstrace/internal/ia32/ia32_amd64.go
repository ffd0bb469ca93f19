package ia32

// Syscall5 makes the ia32 system call nr with up to five arguments (in
// ebx, ecx, edx, esi and edi) and returns what the kernel put in eax:
// the result, or minus an errno. If the kernel runs no ia32 code
// (ia32_emulation=0), the process dies of SIGSEGV, so callers make the
// calls in a child process.
func Syscall5(nr, a1, a2, a3, a4, a5 uint32) int32

// Package ia32 makes 32-bit (ia32) system calls from a 64-bit process on
// amd64, through int $0x80, as a 32-bit task makes them: the kernel takes
// them as compat calls, with the ia32 numbers. Tests use it to check that
// what watches 64-bit system calls by number is not fooled by them.
package ia32

// Times how long read(2)-family calls on files of chosen superblocks
// take, per superblock, as log2 histograms, from the tracepoints
// raw_syscalls/sys_enter and sys_exit: from the call's entry to its
// return.
//
// At sys_enter of read, pread64, readv, preadv or preadv2 (a native
// call: not a 32-bit task's compat call, whose numbers mean other
// calls), the call's file descriptor is looked up in the task's file
// table (task->files->fdt->fd[fd], bounded by fdt->max_fds) and the
// file's superblock dev (file->f_inode->i_sb->s_dev) checked against
// the devs map; a call on a superblock timed gets its start time in
// task-local storage, and sys_exit of the same call adds its duration
// to that superblock's histogram.
//
// Files on overlayfs (containers see EROFS layers through it) are on the
// overlay's superblock, never on a layer's: a call on an overlayfs file
// is noted as stacked at entry, and filemap/mm_filemap_get_pages, which
// fires inside the call when it reads the page cache of the file below
// (the EROFS inode's), names the superblock; the call counts for the
// last superblock timed that it read the page cache of, and not at all
// if none. User space turns this off (stacked = 0) where the kernel has
// no such tracepoint.
//
// The programs are BTF tracepoints (tp_btf), which run where fentry,
// kprobes and LSM programs are refused. The kernel struct fields read are
// declared below with preserve_access_index, so that the loader relocates
// their offsets to the running kernel's BTF (CO-RE). Those reached from
// the current task (bpf_get_current_task_btf, a pointer whose BTF type
// the verifier knows) are loaded directly, down to the fd array; the
// rest (the file, its inode and superblock, the registers) with
// bpf_probe_read_kernel, which takes a bare address. It includes no
// headers, like trace.c, so that compiling it needs clang alone.
//
// The superblocks timed are the keys of the devs map, which user space
// fills; nothing is sent to user space per call.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __always_inline inline __attribute__((always_inline))

// From include/uapi/linux/bpf.h.
#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_TASK_STORAGE 29
#define BPF_F_NO_PREALLOC (1U << 0)
#define BPF_LOCAL_STORAGE_GET_F_CREATE (1ULL << 0)

// From libbpf's bpf_core_read.h: enum bpf_field_info_kind.
#define BPF_FIELD_EXISTS 2
#define FIELD_EXISTS(field) __builtin_preserve_field_info(field, BPF_FIELD_EXISTS)

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)113;

struct task_struct;
static void *(*bpf_task_storage_get)(void *map, struct task_struct *task, void *value, __u64 flags) = (void *)156;
static struct task_struct *(*bpf_get_current_task_btf)(void) = (void *)158;

// Rewritten at load time (bpf2go: Variables); volatile so that clang
// reads them rather than folding the zero defaults in, const so that the
// verifier sees their values and prunes the branches they rule out.
//
// abi says how to read the registers: ABI_X86_64 or ABI_ARM64 (0 turns
// every call away). read_nrs are the native numbers of read, pread64,
// readv, preadv and preadv2 on it. stacked enables the timing of calls
// on overlayfs files (mm_filemap_get_pages is attached).
#define ABI_X86_64 1
#define ABI_ARM64 2
#define NREADS 5
volatile const __u32 abi;
volatile const __u32 read_nrs[NREADS];
volatile const __u32 stacked;

// The kernel's structs, as far as they are read here. CO-RE finds each
// field by name in the running kernel; a ___flavor suffix names the same
// kernel struct (pt_regs differs by architecture; the fields of the
// other architecture are never read, their branch pruned by abi).
struct pt_regs___x86_64 {
	unsigned long di;
	unsigned long orig_ax;
} __attribute__((preserve_access_index));

// On arm64, pt_regs starts with a union of user_pt_regs and an anonymous
// struct of regs[31], sp, pc and pstate; CO-RE looks into both.
struct pt_regs___arm64 {
	__u64 pstate;
	__u64 orig_x0;
	__s32 syscallno;
} __attribute__((preserve_access_index));

struct thread_info___x86_64 {
	__u32 status;
} __attribute__((preserve_access_index));

struct task_struct___x86_64 {
	struct thread_info___x86_64 thread_info;
} __attribute__((preserve_access_index));

struct super_block {
	__u32 s_dev; // dev_t
	unsigned long s_magic;
} __attribute__((preserve_access_index));

struct inode {
	struct super_block *i_sb;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __attribute__((preserve_access_index));

struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));

struct task_struct {
	struct files_struct *files;
} __attribute__((preserve_access_index));

struct address_space {
	struct inode *host;
} __attribute__((preserve_access_index));

// x86-64: thread_info.status bit of a task in a 32-bit (ia32) system
// call, arch/x86/include/asm/thread_info.h.
#define TS_COMPAT 0x0002
// arm64: the PSTATE bit of AArch32 (a compat task), PSR_MODE32_BIT.
#define PSR_MODE32_BIT 0x10
// include/uapi/linux/magic.h.
#define OVERLAYFS_SUPER_MAGIC 0x794c7630

// READ_KERNEL reads the kernel's field src into dst, at the field's
// offset in the running kernel; dst is left as it was (zero) if the read
// faults.
#define READ_KERNEL(dst, src) \
	bpf_probe_read_kernel(&(dst), sizeof(dst), __builtin_preserve_access_index(&(src)))

// Slot i counts durations of at most 1000 << i ns, for i below NBOUNDS
// (1 µs to 2^24 µs, about 16.8 s); slot NBOUNDS counts the longer ones.
// The slot array is a power of two so that masking the index bounds it
// for the verifier; the slots after NBOUNDS stay zero.
#define NBOUNDS 25
#define NSLOTS 32

// hist is one histogram: per-slot counts, not cumulative, and the sum of
// the durations in nanoseconds. Its count is the sum of the slots.
struct hist {
	__u64 sum_ns;
	__u64 slots[NSLOTS];
};

// devs maps a superblock's dev_t (major<<20 | minor) to its read
// histogram: the superblocks timed. User space adds and removes them;
// the programs only add to the counts.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct hist);
	__uint(max_entries, 1 << 14); // user space may change it
} devs SEC(".maps");

// What a task's call in flight is: none, one on a file of a superblock
// timed (dev), or one on an overlayfs file (dev once found, if found).
#define IDLE 0
#define DIRECT 1
#define STACKED 2

// inflight is the call in flight on one task: which (its number), how
// it is timed, for which superblock, since when.
struct inflight {
	__u64 start_ns;
	__u32 nr;
	__u32 state;
	__u32 dev;
	__u32 found; // STACKED: dev is set
};

// inflights is task-local storage: freed with the task, no table to fill
// or to leak into when an exit is missed.
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct inflight);
} inflights SEC(".maps");

// missed counts calls on superblocks timed (or on overlayfs files) that
// were not timed: the task's storage could not be had.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} missed SEC(".maps");

// slot_of returns the slot of a duration of ns nanoseconds: the least i
// with ns <= 1000 << i, that is, ceil(ns / 1000) <= 1 << i.
static __always_inline __u32 slot_of(__u64 ns)
{
	__u64 us = (ns + 999) / 1000;
	__u64 v;
	__u32 bits = 0;

	if (us <= 1)
		return 0;
	// The bit length of us-1 is ceil(log2(us)).
	v = us - 1;
	if (v >> 32) {
		v >>= 32;
		bits += 32;
	}
	if (v >> 16) {
		v >>= 16;
		bits += 16;
	}
	if (v >> 8) {
		v >>= 8;
		bits += 8;
	}
	if (v >> 4) {
		v >>= 4;
		bits += 4;
	}
	if (v >> 2) {
		v >>= 2;
		bits += 2;
	}
	if (v >> 1) {
		v >>= 1;
		bits += 1;
	}
	bits += v;
	return bits < NBOUNDS ? bits : NBOUNDS;
}

static __always_inline int is_read(long id)
{
	for (int i = 0; i < NREADS; i++)
		if (id == read_nrs[i])
			return 1;
	return 0;
}

// native_call reports whether the current system call is one of the
// 64-bit ABI, whose numbers read_nrs are: not a compat call of a 32-bit
// task (or, on x86-64, of int $0x80).
static __always_inline int native_call(void *regs)
{
	if (abi == ABI_X86_64) {
		struct task_struct___x86_64 *task = (void *)bpf_get_current_task_btf();

		if (!FIELD_EXISTS(task->thread_info.status))
			return 0;
		return !(task->thread_info.status & TS_COMPAT);
	}
	if (abi == ABI_ARM64) {
		struct pt_regs___arm64 *r = regs;
		__u64 pstate = PSR_MODE32_BIT;

		if (!FIELD_EXISTS(r->pstate))
			return 0;
		READ_KERNEL(pstate, r->pstate);
		return !(pstate & PSR_MODE32_BIT);
	}
	return 0;
}

// first_arg returns the system call's first argument, as at entry.
static __always_inline __u64 first_arg(void *regs)
{
	__u64 arg = -1;

	if (abi == ABI_X86_64) {
		struct pt_regs___x86_64 *r = regs;

		if (FIELD_EXISTS(r->di))
			READ_KERNEL(arg, r->di);
	} else if (abi == ABI_ARM64) {
		struct pt_regs___arm64 *r = regs;

		// x0 is overwritten by the return value; orig_x0 keeps it.
		if (FIELD_EXISTS(r->orig_x0))
			READ_KERNEL(arg, r->orig_x0);
	}
	return arg;
}

// call_nr returns the number of the system call the task is in, as at
// exit (-1 if unknown).
static __always_inline long call_nr(void *regs)
{
	if (abi == ABI_X86_64) {
		struct pt_regs___x86_64 *r = regs;
		unsigned long nr = -1;

		if (FIELD_EXISTS(r->orig_ax))
			READ_KERNEL(nr, r->orig_ax);
		return nr;
	}
	if (abi == ABI_ARM64) {
		struct pt_regs___arm64 *r = regs;
		__s32 nr = -1;

		if (FIELD_EXISTS(r->syscallno))
			READ_KERNEL(nr, r->syscallno);
		return nr;
	}
	return -1;
}

// fd_sb returns the superblock of the current task's file fd, or 0. The
// table is read under RCU (tracepoint programs run in an RCU read-side
// section), as the kernel's own lockless lookups read it: fd bounded by
// the max_fds of the same fdtable that fd[] is read from. The loads from
// the task down to fdt->fd are checked by the verifier against the
// kernel's BTF (one that faults reads zero, as bpf_probe_read_kernel
// would); fd[] holds bare pointers, read with bpf_probe_read_kernel.
static __always_inline struct super_block *fd_sb(__u32 fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct files_struct *files;
	struct fdtable *fdt;
	struct file **fds;
	struct file *file = 0;
	struct inode *inode = 0;
	struct super_block *sb = 0;
	__u32 max;

	files = task->files;
	if (!files)
		return 0;
	fdt = files->fdt;
	if (!fdt)
		return 0;
	max = fdt->max_fds;
	fds = fdt->fd;
	if (fd >= max || !fds)
		return 0;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	if (!file)
		return 0;
	READ_KERNEL(inode, file->f_inode);
	if (inode)
		READ_KERNEL(sb, inode->i_sb);
	return sb;
}

static __always_inline int is_overlay(struct super_block *sb)
{
	unsigned long magic = 0;

	READ_KERNEL(magic, sb->s_magic);
	return magic == OVERLAYFS_SUPER_MAGIC;
}

static __always_inline void count_missed(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&missed, &zero);

	if (n)
		__sync_fetch_and_add(n, 1);
}

// sys_enter notes the start of a read call on a file of a superblock
// timed, or on an overlayfs file. Every other call returns at the first
// test, on its number.
SEC("tp_btf/sys_enter")
int sys_enter(__u64 *ctx)
{
	void *regs = (void *)ctx[0];
	long id = (long)ctx[1];
	struct super_block *sb;
	struct inflight *in;
	__u32 dev = 0, state;

	if (!is_read(id) || !native_call(regs))
		return 0;
	// The kernel takes the descriptor as an unsigned int.
	sb = fd_sb((__u32)first_arg(regs));
	if (sb)
		READ_KERNEL(dev, sb->s_dev);
	if (sb && bpf_map_lookup_elem(&devs, &dev)) {
		state = DIRECT;
	} else if (sb && stacked && is_overlay(sb)) {
		state = STACKED;
		dev = 0;
	} else {
		// Not timed. A start that an earlier call left behind (its
		// exit unseen) must not end at this call's exit.
		in = bpf_task_storage_get(&inflights, bpf_get_current_task_btf(), 0, 0);
		if (in)
			in->state = IDLE;
		return 0;
	}
	in = bpf_task_storage_get(&inflights, bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!in) {
		count_missed();
		return 0;
	}
	in->nr = id;
	in->state = state;
	in->dev = dev;
	in->found = 0;
	in->start_ns = bpf_ktime_get_ns();
	return 0;
}

// stacked_read runs where a read fills a batch of folios from a file's
// page cache (filemap_get_pages): if the task is in a call on an
// overlayfs file and the file read is on a superblock timed, the call is
// that superblock's. The last one wins, so that a stack read through a
// filesystem timed whose own reads go through the page cache of another
// (its backing file's, read inside its read) counts for the top one,
// whose batch completes last.
SEC("tp_btf/mm_filemap_get_pages")
int stacked_read(__u64 *ctx)
{
	struct address_space *mapping = (void *)ctx[0];
	struct inode *host = 0;
	struct super_block *sb = 0;
	struct inflight *in;
	__u32 dev = 0;

	// No storage is created here: a task that never entered a timed
	// call has none, and the lookup is all it costs.
	in = bpf_task_storage_get(&inflights, bpf_get_current_task_btf(), 0, 0);
	if (!in || in->state != STACKED)
		return 0;
	READ_KERNEL(host, mapping->host);
	if (host)
		READ_KERNEL(sb, host->i_sb);
	if (!sb)
		return 0;
	READ_KERNEL(dev, sb->s_dev);
	if (!bpf_map_lookup_elem(&devs, &dev))
		return 0;
	in->dev = dev;
	in->found = 1;
	return 0;
}

// sys_exit counts the call in flight if this is its exit and it was on a
// superblock timed.
SEC("tp_btf/sys_exit")
int sys_exit(__u64 *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	void *regs = (void *)ctx[0];
	struct inflight *in;
	struct hist *h;
	__u64 start, ns;
	__u32 dev, state;

	in = bpf_task_storage_get(&inflights, bpf_get_current_task_btf(), 0, 0);
	if (!in || in->state == IDLE)
		return 0;
	state = in->state;
	in->state = IDLE;
	// The exit of another call: the one noted lost its exit.
	if (call_nr(regs) != in->nr)
		return 0;
	if (state == STACKED && !in->found)
		return 0;
	start = in->start_ns;
	dev = in->dev;
	if (!start || now < start)
		return 0;
	ns = now - start;
	// The superblock may have been removed meanwhile: then nothing is
	// counted.
	h = bpf_map_lookup_elem(&devs, &dev);
	if (!h)
		return 0;
	__sync_fetch_and_add(&h->slots[slot_of(ns) & (NSLOTS - 1)], 1);
	__sync_fetch_and_add(&h->sum_ns, ns);
	return 0;
}

// bpf_probe_read_kernel and the task storage helpers are GPL-only.
char __license[] SEC("license") = "Dual MIT/GPL";

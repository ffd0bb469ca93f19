// Times how long readers wait in the EROFS read path, per superblock,
// as log2 histograms: read(2)-family calls from when the EROFS file's
// read_iter is entered to when it returns (erofs_file_read_iter, or
// filemap_read where that is not found), and page faults on mapped
// files from when filemap_fault is entered to when it returns.
//
// fentry/fexit programs (BPF trampolines). The few kernel struct fields
// read are declared below with preserve_access_index, so that the loader
// relocates their offsets to the running kernel's BTF (CO-RE), and read
// with bpf_probe_read_kernel: the programs take their argument as a bare
// address and do not depend on how the verifier types it, which lets the
// tests load the same code on tracepoints (BTF-typed, tp_btf) where
// fentry is not allowed. It includes no headers, like trace.c, so that
// compiling it needs clang alone.
//
// The superblocks timed are the keys of the devs map, which user space
// fills; nothing is sent to user space per event.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
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

struct task_struct;

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)113;
static void *(*bpf_task_storage_get)(void *map, struct task_struct *task, void *value, __u64 flags) = (void *)156;
static struct task_struct *(*bpf_get_current_task_btf)(void) = (void *)158;

// The kernel's structs, as far as they are read here. CO-RE finds each
// field by name in the running kernel (vma sits in an anonymous struct
// in struct vm_fault; the relocation looks there too).
struct super_block {
	__u32 s_dev; // dev_t
} __attribute__((preserve_access_index));

struct inode {
	struct super_block *i_sb;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));

struct kiocb {
	struct file *ki_filp;
} __attribute__((preserve_access_index));

struct vm_area_struct {
	struct file *vm_file;
} __attribute__((preserve_access_index));

struct vm_fault {
	struct vm_area_struct *vma;
} __attribute__((preserve_access_index));

// READ_KERNEL reads the kernel's field src into dst, at the field's
// offset in the running kernel; dst is left as it was (zero) if the read
// faults.
#define READ_KERNEL(dst, src) \
	bpf_probe_read_kernel(&(dst), sizeof(dst), __builtin_preserve_access_index(&(src)))

// What is timed: reads, faults. Each kind has its own histogram and its
// own in-flight slot per task, since a fault can happen inside a read
// (the read's copy to a buffer mapped from an EROFS file).
#define KIND_READ 0
#define KIND_FAULT 1
#define NKINDS 2

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

struct dev_hists {
	struct hist kinds[NKINDS];
};

// devs maps a superblock's dev_t (major<<20 | minor) to its histograms:
// the superblocks timed. User space adds and removes them; the programs
// only add to the counts.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct dev_hists);
	__uint(max_entries, 1 << 14); // user space may change it
} devs SEC(".maps");

// An operation in flight on one task: which (the address of the kiocb or
// vm_fault the function got), on which superblock, since when.
struct inflight_op {
	__u64 start_ns;
	__u64 arg;
	__u32 dev;
	__u32 pad;
};

struct inflight {
	struct inflight_op ops[NKINDS];
};

// inflight is task-local storage: freed with the task, no table to fill
// or to leak into when an exit is missed.
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct inflight);
} inflight SEC(".maps");

// missed counts operations on timed superblocks that were not timed: the
// task's storage could not be allocated.
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

// forget clears the task's slot of kind if it holds arg: a call that is
// not timed must not find a start that a timed call left behind at the
// same address (the kiocb of one read(2) sits where the last one's did)
// if that one's exit went unseen (a program skipped as recursive).
static __always_inline int forget(__u64 arg, __u32 kind)
{
	struct inflight *in = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0, 0);

	if (in && in->ops[kind].arg == arg)
		in->ops[kind].arg = 0;
	return 0;
}

// enter notes the start of an operation of kind on file, if the file is
// on a superblock timed; arg (the kiocb or vm_fault) tells its exit.
static __always_inline int enter(struct file *file, __u64 arg, __u32 kind)
{
	struct inode *inode = 0;
	struct super_block *sb = 0;
	struct inflight *in;
	__u32 dev = 0;

	if (file)
		READ_KERNEL(inode, file->f_inode);
	if (inode)
		READ_KERNEL(sb, inode->i_sb);
	if (sb)
		READ_KERNEL(dev, sb->s_dev);
	// The one filter: most files are on superblocks not timed, and one
	// hash lookup turns them away.
	if (!sb || !bpf_map_lookup_elem(&devs, &dev))
		return forget(arg, kind);
	in = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!in) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&missed, &zero);
		if (n)
			__sync_fetch_and_add(n, 1);
		return 0;
	}
	in->ops[kind].arg = arg;
	in->ops[kind].dev = dev;
	in->ops[kind].start_ns = bpf_ktime_get_ns();
	return 0;
}

// leave counts the operation of kind that arg started, if it was timed.
static __always_inline int leave(__u64 arg, __u32 kind)
{
	__u64 now = bpf_ktime_get_ns();
	struct inflight *in;
	struct dev_hists *h;
	__u64 start, ns;
	__u32 dev;

	// No storage is created here: a task that never entered has none,
	// and the lookup is all it costs.
	in = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0, 0);
	if (!in || in->ops[kind].arg != arg)
		return 0;
	start = in->ops[kind].start_ns;
	dev = in->ops[kind].dev;
	in->ops[kind].arg = 0;
	if (!start || now < start)
		return 0;
	ns = now - start;
	// The superblock may have been removed meanwhile: then nothing is
	// counted.
	h = bpf_map_lookup_elem(&devs, &dev);
	if (!h)
		return 0;
	__sync_fetch_and_add(&h->kinds[kind].slots[slot_of(ns) & (NSLOTS - 1)], 1);
	__sync_fetch_and_add(&h->kinds[kind].sum_ns, ns);
	return 0;
}

// The read programs take the function's first argument, a struct kiocb,
// which erofs_file_read_iter and filemap_read share; user space picks
// the function (AttachTo) before loading.
SEC("fentry/erofs_file_read_iter")
int read_enter(__u64 *ctx)
{
	struct kiocb *iocb = (struct kiocb *)ctx[0];
	struct file *file = 0;

	READ_KERNEL(file, iocb->ki_filp);
	return enter(file, ctx[0], KIND_READ);
}

SEC("fexit/erofs_file_read_iter")
int read_exit(__u64 *ctx)
{
	return leave(ctx[0], KIND_READ);
}

SEC("fentry/filemap_fault")
int fault_enter(__u64 *ctx)
{
	struct vm_fault *vmf = (struct vm_fault *)ctx[0];
	struct vm_area_struct *vma = 0;
	struct file *file = 0;

	READ_KERNEL(vma, vmf->vma);
	if (vma)
		READ_KERNEL(file, vma->vm_file);
	return enter(file, ctx[0], KIND_FAULT);
}

// The vma is not read here: filemap_fault may have dropped the mmap
// lock, and the vma be gone.
SEC("fexit/filemap_fault")
int fault_exit(__u64 *ctx)
{
	return leave(ctx[0], KIND_FAULT);
}

// bpf_probe_read_kernel and the task storage helpers are GPL-only.
char __license[] SEC("license") = "Dual MIT/GPL";

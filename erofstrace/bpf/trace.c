// Records which pages of files one EROFS mount reads, from the classic
// tracepoints erofs/erofs_readahead (erofs_readpages on older kernels
// such as 6.1) and erofs/erofs_read_folio, into a ring buffer.
//
// The trace record layout is not part of any ABI, so no field offset is
// compiled in: user space reads each event's format file in tracefs and
// rewrites the layout constants below before loading. Nothing here needs
// the kernel's BTF, so it loads where BTF is missing too.
//
// It includes no headers (no libbpf, no kernel headers) so that compiling
// it needs clang alone; the few definitions it uses follow.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

// From include/uapi/linux/bpf.h.
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_RINGBUF 27

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)113;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;

// field is where one field sits in a trace record; size 0 means the event
// has no such field.
struct field {
	__u32 off;
	__u32 size;
};

// layout (type layout in Go) is what the program reads of one event:
// the superblock's dev, the inode's nid, the first page, and either a
// page count (readahead) or the dir flag (read_folio, one page).
struct layout {
	struct field dev;
	struct field nid;
	struct field index;
	struct field count;
	struct field dir;
};

// Rewritten at load time (bpf2go: Variables); volatile so that clang
// reads them rather than folding the zero defaults in, const so that the
// verifier sees their values and prunes the branches they rule out.
volatile const __u32 target_dev;	// kernel dev_t: major<<20 | minor
volatile const struct layout readahead_layout;
volatile const struct layout read_folio_layout;

// event is one record in the ring buffer (decoded by decodeEvent).
struct event {
	__u64 ktime_ns;
	__u64 nid;
	__u64 index; // first page
	__u32 count; // pages
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20); // bytes; user space may change it
} events SEC(".maps");

// lost counts events the ring buffer had no room for.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} lost SEC(".maps");

// read_field reads an unsigned field of 1, 2, 4 or 8 bytes from the
// record. A tracepoint program may only read its context at offsets fixed
// in the instruction, and ours come from the layout, so it copies.
static __attribute__((always_inline)) __u64 read_field(void *ctx, volatile const struct field *f)
{
	__u32 off = f->off;

	switch (f->size) {
	case 1: {
		__u8 v = 0;
		bpf_probe_read_kernel(&v, sizeof(v), ctx + off);
		return v;
	}
	case 2: {
		__u16 v = 0;
		bpf_probe_read_kernel(&v, sizeof(v), ctx + off);
		return v;
	}
	case 4: {
		__u32 v = 0;
		bpf_probe_read_kernel(&v, sizeof(v), ctx + off);
		return v;
	}
	case 8: {
		__u64 v = 0;
		bpf_probe_read_kernel(&v, sizeof(v), ctx + off);
		return v;
	}
	}
	return 0;
}

static __attribute__((always_inline)) int record(void *ctx, volatile const struct layout *l)
{
	__u64 now = bpf_ktime_get_ns();

	if (read_field(ctx, &l->dev) != target_dev)
		return 0;
	// Directory blocks are read through the page cache too; a prefetch
	// list is about file data.
	if (l->dir.size && read_field(ctx, &l->dir) != 0)
		return 0;

	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&lost, &zero);
		if (n)
			__sync_fetch_and_add(n, 1);
		return 0;
	}
	e->ktime_ns = now;
	e->nid = read_field(ctx, &l->nid);
	e->index = read_field(ctx, &l->index);
	e->count = l->count.size ? read_field(ctx, &l->count) : 1;
	e->pad = 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tracepoint/erofs/erofs_readahead")
int erofs_readahead(void *ctx)
{
	return record(ctx, &readahead_layout);
}

SEC("tracepoint/erofs/erofs_read_folio")
int erofs_read_folio(void *ctx)
{
	return record(ctx, &read_folio_layout);
}

// bpf_probe_read_kernel is GPL-only.
char __license[] SEC("license") = "Dual MIT/GPL";

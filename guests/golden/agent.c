/*
 * goldmig guest agent: speaks PROTOCOL.md (version 6) on hvc0.
 *
 * Started by /init with stdin/stdout/stderr on /dev/hvc0.  Threads:
 *
 *   per online CPU, each pinned to that CPU (sched_setaffinity):
 *     tick     emits the `tick` heartbeat every 250 ms of nanosleep, in every
 *              load mode (timer interrupts still arrive on that CPU);
 *     busy     the CPU's spinner and timebase watcher: while the load mode is
 *              busy it samples mftb in a tight loop, publishes its statistics
 *              and busy beats lock-free and never blocks, so that the CPU
 *              never idles; otherwise it blocks on a condition variable so
 *              that the CPU can go idle; on a tbwarp request it samples
 *              mftb against the other CPUs' spinners (cross-CPU warp);
 *     report   writes the spinner's busy beats as `busy` lines: woken by the
 *              spinner (futex) at each beat, so the console never holds the
 *              spinner up;
 *     timer    while the load mode is timer, sleeps 1 ms in a loop (keeps the
 *              CPU's decrementer armed about 1 ms ahead) and counts wake-ups;
 *              otherwise blocks like the spinner;
 *     ipi      blocked in a futex wait; pings a peer CPU and times the answer
 *              (ipi command), or answers a peer's ping;
 *   supervisor rescans /sys/devices/system/cpu/online every 250 ms and starts
 *              the per-CPU threads on a CPU that came online (CPU hotplug);
 *   dlpar      reads the RTAS event log and does drmgr's part of a PCI
 *              hotplug (the kernel leaves it to user space);
 *   main       reads commands from the console and answers them.
 *
 * main, the supervisor and dlpar are pinned to the lowest CPU online at start.
 *
 * Every output line goes through emit(), which holds one mutex while it
 * assigns the sequence number and writes the whole line, so lines never
 * interleave and seq order is write order.  The spinner never calls it: a
 * write to the slow console, or that mutex, can block, and a blocked spinner
 * lets its CPU idle, which after a migration to a QEMU that lost the
 * decrementer re-arms it (PROTOCOL.md, "Spinners never block").
 *
 * Build: powerpc64le-linux-gnu-gcc -static -O2 -pthread -Wall -Wextra
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define PROTOCOL_VERSION 6
#define MAX_CPUS 256            /* CPU numbers at or above this are not watched */
#define BUSY_PER_SECOND 10      /* target busy beat rate */
#define CALIBRATION_WINDOWS 4   /* one-off calibration: 4 windows of ... */
#define CALIBRATION_SPLIT 4     /* ... 1/CALIBRATION_SPLIT of a beat each (25 ms) */
#define SPIN_BATCH 4096         /* spinner iterations between stats flushes and mode checks */
#define TICK_NS 250000000L      /* tick heartbeat period */
#define TIMER_NS 1000000L       /* timer-load sleep */
#define SCAN_NS 250000000L      /* online CPU rescan period */
#define MODE_WAIT_S 5           /* a load mode must be in effect within this */
#define IPI_ANSWER_S 1          /* an IPI round trip not back within this is lost */
#define THREAD_STACK (128 * 1024)
#define MAX_COMMAND 128         /* longest accepted command line */
#define WARP_MS 200             /* tbwarp: how long the spinners sample together */
#define WARP_MEET_S 1           /* tbwarp: how long a spinner waits for the others to join */
#define WARP_TURN 1000          /* tbwarp: at most 1/WARP_TURN s waiting for another CPU's turn */

static inline uint64_t mftb(void)
{
	return __builtin_ppc_get_timebase();
}

static void die(const char *what)
{
	fprintf(stderr, "goldmig-agent: fatal: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* ---- CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320, as zlib) ---- */

static uint32_t crc_table[256];

static void crc32_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

/* Continue a CRC: start with crc = 0, feed pieces in order. */
static uint32_t crc32_update(uint32_t crc, const char *p, size_t len)
{
	crc = ~crc;
	while (len--)
		crc = crc_table[(crc ^ (uint8_t)*p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* ---- growable string buffer ---- */

struct buf {
	char *data;
	size_t len, cap;
};

static void buf_reserve(struct buf *b, size_t extra)
{
	if (b->len + extra + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + extra + 1)
		cap *= 2;
	char *p = realloc(b->data, cap);
	if (!p)
		die("realloc");
	b->data = p;
	b->cap = cap;
}

__attribute__((format(printf, 2, 3)))
static void buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		die("vsnprintf");
	buf_reserve(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

/* Append s as a JSON string; anything outside printable ASCII is \u-escaped
 * so that lines stay ASCII and the CRC is over exactly what Python sees. */
static void buf_json_str(struct buf *b, const char *s)
{
	buf_printf(b, "\"");
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			buf_printf(b, "\\%c", *p);
		else if (*p < 0x20 || *p > 0x7e)
			buf_printf(b, "\\u%04x", *p);
		else
			buf_printf(b, "%c", *p);
	}
	buf_printf(b, "\"");
}

static void buf_free(struct buf *b)
{
	free(b->data);
	*b = (struct buf){0};
}

/* ---- output: one mutex, one line per call ---- */

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t out_seq;   /* guarded by out_lock */

static void write_all(const char *p, size_t len)
{
	while (len) {
		ssize_t n = write(STDOUT_FILENO, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return; /* console gone: nothing useful left to do */
		}
		p += n;
		len -= (size_t)n;
	}
}

/* Write "##GM <type> <seq> <crc> <payload>\n"; crc covers "<type> <seq> <payload>". */
static void emit(const char *type, const char *payload)
{
	char seqstr[24];
	struct buf line = {0};

	pthread_mutex_lock(&out_lock);
	snprintf(seqstr, sizeof(seqstr), "%" PRIu64, ++out_seq);
	uint32_t crc = crc32_update(0, type, strlen(type));
	crc = crc32_update(crc, " ", 1);
	crc = crc32_update(crc, seqstr, strlen(seqstr));
	crc = crc32_update(crc, " ", 1);
	crc = crc32_update(crc, payload, strlen(payload));
	buf_printf(&line, "##GM %s %s %08x %s\n", type, seqstr, crc, payload);
	write_all(line.data, line.len);
	pthread_mutex_unlock(&out_lock);
	buf_free(&line);
}

__attribute__((format(printf, 2, 3)))
static void emitf(const char *type, const char *fmt, ...)
{
	va_list ap;
	char payload[512];

	va_start(ap, fmt);
	vsnprintf(payload, sizeof(payload), fmt, ap);
	va_end(ap);
	emit(type, payload);
}

static void reply_error(long long req, const char *text)
{
	struct buf b = {0};
	buf_printf(&b, "{\"req\":%lld,\"error\":", req);
	buf_json_str(&b, text);
	buf_printf(&b, "}");
	emit("error", b.data);
	buf_free(&b);
}

/* ---- CPU lists ("0-3,5" as in /sys/devices/system/cpu/online) ---- */

/*
 * Set set[c] for every CPU c in list (a trailing newline is allowed); false
 * if the text is not a CPU list.  CPUs at or above MAX_CPUS are left out and
 * counted in *beyond.
 */
static bool parse_cpulist(const char *list, bool set[MAX_CPUS], unsigned long *beyond)
{
	const char *p = list;
	memset(set, 0, MAX_CPUS * sizeof(set[0]));
	*beyond = 0;
	for (;;) {
		char *end;
		if (!isdigit((unsigned char)*p))
			return false;
		unsigned long first = strtoul(p, &end, 10), last = first;
		p = end;
		if (*p == '-') {
			if (!isdigit((unsigned char)p[1]))
				return false;
			last = strtoul(p + 1, &end, 10);
			p = end;
		}
		if (last < first)
			return false;
		for (unsigned long c = first; c <= last && c < MAX_CPUS; c++)
			set[c] = true;
		if (last >= MAX_CPUS)
			*beyond += last - (first > MAX_CPUS ? first : MAX_CPUS) + 1;
		if (*p != ',')
			break;
		p++;
	}
	return *p == '\0' || (*p == '\n' && p[1] == '\0');
}

/* ---- small file helpers for probe ---- */

/* Read a whole (small) file into b, NUL-terminated; false if unreadable. */
static bool slurp(const char *path, struct buf *b)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	b->len = 0;
	buf_reserve(b, 0);
	for (;;) {
		buf_reserve(b, 4096);
		size_t n = fread(b->data + b->len, 1, 4096, f);
		b->len += n;
		if (n == 0)
			break;
	}
	b->data[b->len] = '\0';
	bool ok = !ferror(f);
	fclose(f);
	return ok;
}

static void rstrip(struct buf *b)
{
	while (b->len && isspace((unsigned char)b->data[b->len - 1]))
		b->data[--b->len] = '\0';
}

/* The first whitespace-delimited field of a file, as a JSON string ("" if unreadable). */
static void json_file_field(struct buf *out, const char *path, bool whole_line)
{
	struct buf f = {0};
	if (!slurp(path, &f)) {
		buf_json_str(out, "");
		return;
	}
	rstrip(&f);
	if (!whole_line)
		f.data[strcspn(f.data, " \t\n")] = '\0';
	buf_json_str(out, f.data);
	buf_free(&f);
}

/* "timebase : 512000000" from /proc/cpuinfo; 0 if absent. */
static uint64_t cpuinfo_tb_freq(void)
{
	struct buf f = {0};
	uint64_t freq = 0;
	if (!slurp("/proc/cpuinfo", &f))
		return 0;
	for (char *l = f.data; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		if (strncmp(l, "timebase", 8) == 0) {
			char *colon = strchr(l, ':');
			if (colon)
				freq = strtoull(colon + 1, NULL, 10);
			break;
		}
	}
	buf_free(&f);
	return freq;
}

/* "MemTotal: N kB" from /proc/meminfo (memory the kernel has online); 0 if absent. */
static uint64_t meminfo_total_kb(void)
{
	struct buf f = {0};
	uint64_t kb = 0;
	if (!slurp("/proc/meminfo", &f))
		return 0;
	if (strncmp(f.data, "MemTotal:", 9) == 0)
		kb = strtoull(f.data + 9, NULL, 10);
	buf_free(&f);
	return kb;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names in dir that start with prefix; *count set; caller frees. */
static char **list_dir(const char *dir, const char *prefix, size_t *count)
{
	char **names = NULL;
	size_t n = 0;
	DIR *d = opendir(dir);
	*count = 0;
	if (!d)
		return NULL;
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] == '.' || strncmp(e->d_name, prefix, strlen(prefix)) != 0)
			continue;
		char **grown = realloc(names, (n + 1) * sizeof(*names));
		if (!grown || !(grown[n] = strdup(e->d_name)))
			die("out of memory");
		names = grown;
		n++;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_str);
	*count = n;
	return names;
}

static void free_list(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/*
 * Distinct interrupt chip names from /proc/interrupts, sorted, as a JSON
 * array.  Only numbered rows carry a chip name: "<irq>: <one count per CPU>
 * <chip> <hwirq> ...".  The header row gives the number of CPU columns.
 * Also sets intc to "XIVE" or "XICS" from those names ("" if neither).
 */
static void json_intc(struct buf *out, const char **intc)
{
	struct buf f = {0};
	char *names[64];
	size_t nnames = 0;
	int ncpus = 0;

	*intc = "";
	if (slurp("/proc/interrupts", &f)) {
		char *save = NULL;
		for (char *l = strtok_r(f.data, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
			char *tsave = NULL;
			char *tok = strtok_r(l, " \t", &tsave);
			if (!tok)
				continue;
			if (ncpus == 0) { /* header: CPU0 CPU1 ... */
				for (; tok; tok = strtok_r(NULL, " \t", &tsave))
					ncpus++;
				continue;
			}
			if (!isdigit((unsigned char)tok[0]))
				continue; /* LOC:, NMI:, ... have a description, not a chip */
			for (int i = 0; i < ncpus && tok; i++)
				tok = strtok_r(NULL, " \t", &tsave);
			tok = tok ? strtok_r(NULL, " \t", &tsave) : NULL;
			if (!tok)
				continue;
			bool seen = false;
			for (size_t i = 0; i < nnames && !seen; i++)
				seen = strcmp(names[i], tok) == 0;
			if (!seen && nnames < sizeof(names) / sizeof(names[0]))
				names[nnames++] = tok;
		}
	}
	qsort(names, nnames, sizeof(names[0]), cmp_str);
	buf_printf(out, "[");
	for (size_t i = 0; i < nnames; i++) {
		buf_printf(out, i ? "," : "");
		buf_json_str(out, names[i]);
		if (strncmp(names[i], "XIVE", 4) == 0)
			*intc = "XIVE";
		else if (strncmp(names[i], "XICS", 4) == 0 && !**intc)
			*intc = "XICS";
	}
	buf_printf(out, "]");
	buf_free(&f);
}

/* PCI devices from sysfs, sorted by address. */
static void json_pci(struct buf *out)
{
	static const char base[] = "/sys/bus/pci/devices";
	size_t n;
	char **devs = list_dir(base, "", &n);
	char path[512];

	buf_printf(out, "[");
	for (size_t i = 0; i < n; i++) {
		buf_printf(out, "%s{\"addr\":", i ? "," : "");
		buf_json_str(out, devs[i]);
		static const char *const attrs[] = {"vendor", "device", "class"};
		for (size_t a = 0; a < 3; a++) {
			snprintf(path, sizeof(path), "%s/%s/%s", base, devs[i], attrs[a]);
			buf_printf(out, ",\"%s\":", attrs[a]);
			json_file_field(out, path, false);
		}
		/* resource: "start end flags" per line; all-zero lines are unused slots */
		buf_printf(out, ",\"bars\":[");
		snprintf(path, sizeof(path), "%s/%s/resource", base, devs[i]);
		struct buf res = {0};
		bool first = true;
		if (slurp(path, &res)) {
			char *save = NULL;
			for (char *l = strtok_r(res.data, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
				char start[32], end[32], flags[32], bar[100];
				if (sscanf(l, "%31s %31s %31s", start, end, flags) != 3)
					continue;
				if (strtoull(start, NULL, 16) == 0 && strtoull(end, NULL, 16) == 0 &&
				    strtoull(flags, NULL, 16) == 0)
					continue;
				snprintf(bar, sizeof(bar), "%s-%s %s", start, end, flags);
				buf_printf(out, first ? "" : ",");
				buf_json_str(out, bar);
				first = false;
			}
		}
		buf_free(&res);
		buf_printf(out, "]}");
	}
	buf_printf(out, "]");
	free_list(devs, n);
}

/* Each /proc/device-tree/pci@* node's "ranges" property as lower-case hex. */
static void json_phb_ranges(struct buf *out)
{
	static const char base[] = "/proc/device-tree";
	size_t n;
	char **nodes = list_dir(base, "pci@", &n);
	char path[512];

	buf_printf(out, "{");
	for (size_t i = 0; i < n; i++) {
		struct buf prop = {0};
		snprintf(path, sizeof(path), "%s/%s/ranges", base, nodes[i]);
		buf_printf(out, i ? "," : "");
		buf_json_str(out, nodes[i]);
		buf_printf(out, ":\"");
		if (slurp(path, &prop))
			for (size_t k = 0; k < prop.len; k++)
				buf_printf(out, "%02x", (unsigned char)prop.data[k]);
		buf_printf(out, "\"");
		buf_free(&prop);
	}
	buf_printf(out, "}");
	free_list(nodes, n);
}

/* ---- futexes ---- */

static void futex_wait(atomic_uint *word, unsigned expected, const struct timespec *rel)
{
	syscall(SYS_futex, (unsigned *)word, FUTEX_WAIT_PRIVATE, expected, rel, NULL, 0);
}

/* Never sleeps: the spinner may call it. */
static void futex_wake(atomic_uint *word)
{
	syscall(SYS_futex, (unsigned *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* ---- seqlock: one writer that never waits, readers that retry ---- */

/*
 * The sequence is odd while the writer updates the record; a reader takes a
 * copy between two reads of the same even sequence.  The record's fields are
 * relaxed atomics, so a torn read is only ever discarded, never undefined.
 */
static void seq_write_begin(atomic_uint *seq)
{
	atomic_store_explicit(seq, atomic_load_explicit(seq, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
}

static void seq_write_end(atomic_uint *seq)
{
	atomic_store_explicit(seq, atomic_load_explicit(seq, memory_order_relaxed) + 1,
			      memory_order_release);
}

static unsigned seq_read_begin(atomic_uint *seq)
{
	for (;;) {
		unsigned s = atomic_load_explicit(seq, memory_order_acquire);
		if (!(s & 1))
			return s;
		/* The writer may have been preempted on this CPU, mid-update. */
		sched_yield();
	}
}

/* True if the copy taken since seq_read_begin returned s may be torn. */
static bool seq_read_retry(atomic_uint *seq, unsigned s)
{
	atomic_thread_fence(memory_order_acquire);
	return atomic_load_explicit(seq, memory_order_relaxed) != s;
}

/* ---- per-CPU state ---- */

enum load { LOAD_IDLE, LOAD_BUSY, LOAD_TIMER, NLOADS };
static const char *const load_names[NLOADS] = {"idle", "busy", "timer"};

enum role { ROLE_TICK, ROLE_BUSY, ROLE_TIMER, ROLE_IPI, ROLE_REPORT, NROLES };
static const char *const role_names[NROLES] = {"tick", "busy", "timer", "ipi", "report"};

/* Timebase watcher statistics (PROTOCOL.md, "Timebase watcher"). */
struct tb_stats {
	uint64_t samples, max_back, max_fwd, max_fwd_at, last;
};

/* One spinner's tbwarp figures (PROTOCOL.md, "Timebase across CPUs"). */
struct warp_result {
	uint64_t samples;   /* its locked samples */
	uint64_t cross;     /* of those, how many followed another CPU's sample */
	uint64_t max_warp;  /* largest step back from another CPU's sample to its own */
	uint64_t min_gap;   /* smallest step forward from another CPU's sample (0 if no cross) */
	uint64_t max_gap;   /* largest step forward from another CPU's sample */
};

/* What a spinner publishes under its seqlocks; it alone writes them. */
struct stats_record {
	atomic_uint_least64_t gen;    /* the reset generation the figures belong to */
	atomic_uint_least64_t samples, max_back, max_fwd, max_fwd_at, last;
};

struct beat_record {
	atomic_uint_least64_t n, iter, tb;
};

/* Aligned to POWER's 128-byte cache line: a CPU's threads write mostly to their own slot. */
struct __attribute__((aligned(128))) cpu_slot {
	int cpu;
	atomic_bool started;          /* threads exist; set once, never cleared */
	atomic_int ran_on[NROLES];    /* sched_getcpu() at the thread's last iteration, -1 before */
	int seen_load[NROLES];        /* guarded by mode_lock: last load mode the thread acted on */

	/* The spinner's statistics and its latest busy beat, each under a
	 * seqlock that only the spinner writes: readers retry, the spinner
	 * never waits.  beat_seq is also the futex word the reporter waits on;
	 * beat_reported is the beat_seq whose beat the reporter has written. */
	atomic_uint stats_seq;
	struct stats_record stats;
	atomic_uint_least64_t reset_gen; /* tbreset bumps it; older figures read as zero */
	atomic_uint beat_seq;
	struct beat_record beat;
	atomic_uint beat_reported;
	atomic_uint_fast64_t timer_wakeups;

	/* IPI: futex words (32-bit, as the futex syscall wants) and one-slot
	 * mailboxes packed as (seq << 16) | (cpu + 1), 0 when empty. */
	atomic_uint ipi_gen;          /* bumped for every request to this CPU's ipi thread */
	atomic_uint_least64_t ipi_ping;    /* a peer asks for a pong */
	atomic_uint_least64_t ipi_measure; /* main asks for a round trip to a peer */
	atomic_uint ipi_pong;         /* seq of the last pong this CPU's ipi thread received */
	atomic_uint ipi_done;         /* seq of the last round trip measured */
	atomic_int_least64_t ipi_ticks;   /* its result, written before ipi_done */

	/* tbwarp: the spinner's result for request warp_done (written before it). */
	struct warp_result warp;
	atomic_uint warp_done;
};

static struct cpu_slot slots[MAX_CPUS];
static uint64_t tb_freq;

/* Held while one CPU's threads are created and announced; each new thread
 * passes through it first, so nothing from a CPU precedes its `cpu` line. */
static pthread_mutex_t start_lock = PTHREAD_MUTEX_INITIALIZER;

static void note_cpu(struct cpu_slot *s, enum role r)
{
	atomic_store_explicit(&s->ran_on[r], sched_getcpu(), memory_order_relaxed);
}

/* Pin the calling thread to cpu; on failure say so and run unpinned (probe's ran_on shows where). */
static void pin_to(int cpu, const char *who)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET((size_t)cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0) {
		char text[96];
		snprintf(text, sizeof(text), "cpu %d: %s thread not pinned: %m", cpu, who);
		reply_error(-1, text);
	}
}

static void thread_begin(struct cpu_slot *s, enum role r)
{
	pin_to(s->cpu, role_names[r]);
	pthread_mutex_lock(&start_lock);
	pthread_mutex_unlock(&start_lock);
	note_cpu(s, r);
}

static void sleep_ns(long ns)
{
	struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ---- load mode ---- */

/*
 * The mode lives in load_mode (read without a lock by the spinner's hot
 * loop, once per batch).  Changes happen under mode_lock with a broadcast
 * on mode_changed; every spinner and timer thread records in seen_load the
 * mode it has acted on (parked, spinning or sleeping 1 ms) and signals
 * mode_acked, so main can reply ok only once the mode is in effect.
 */
static pthread_mutex_t mode_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t mode_changed = PTHREAD_COND_INITIALIZER;
static pthread_cond_t mode_acked;   /* CLOCK_MONOTONIC, set up in main */
static atomic_int load_mode = LOAD_IDLE;

/* Block until the load mode is want, acknowledging every other mode seen meanwhile. */
static void wait_for_load(struct cpu_slot *s, enum role r, int want)
{
	pthread_mutex_lock(&mode_lock);
	for (;;) {
		int mode = atomic_load_explicit(&load_mode, memory_order_relaxed);
		s->seen_load[r] = mode;
		pthread_cond_broadcast(&mode_acked);
		if (mode == want)
			break;
		pthread_cond_wait(&mode_changed, &mode_lock);
	}
	pthread_mutex_unlock(&mode_lock);
	note_cpu(s, r);
}

static bool load_is(int mode)
{
	return atomic_load_explicit(&load_mode, memory_order_relaxed) == mode;
}

/*
 * Wait until s's reporter has written the last beat its spinner published
 * (the spinner is parked: no more come); false once deadline (CLOCK_MONOTONIC)
 * has passed.
 */
static bool beats_reported(struct cpu_slot *s, const struct timespec *deadline)
{
	for (;;) {
		unsigned want = atomic_load_explicit(&s->beat_seq, memory_order_acquire);
		unsigned done = atomic_load_explicit(&s->beat_reported, memory_order_acquire);
		if (done == want)
			return true;
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		long long left_ns = (long long)(deadline->tv_sec - now.tv_sec) * 1000000000LL +
				    (deadline->tv_nsec - now.tv_nsec);
		if (left_ns <= 0)
			return false;
		struct timespec rel = {(time_t)(left_ns / 1000000000LL), (long)(left_ns % 1000000000LL)};
		futex_wait(&s->beat_reported, done, &rel);
	}
}

/*
 * Switch every CPU to mode; true once every started spinner and timer
 * thread has acted on it and, leaving busy, every busy beat is written (no
 * busy line follows the ok); false (with the laggard in why) after
 * MODE_WAIT_S.
 */
static bool set_load(int mode, char *why, size_t why_len)
{
	struct timespec deadline;
	bool ok = true;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += MODE_WAIT_S;
	pthread_mutex_lock(&mode_lock);
	atomic_store_explicit(&load_mode, mode, memory_order_relaxed);
	pthread_cond_broadcast(&mode_changed);
	for (int c = 0; c < MAX_CPUS && ok; c++) {
		struct cpu_slot *s = &slots[c];
		if (!atomic_load_explicit(&s->started, memory_order_acquire))
			continue;
		for (enum role r = ROLE_BUSY; r <= ROLE_TIMER && ok; r++) {
			while (ok && s->seen_load[r] != mode)
				ok = pthread_cond_timedwait(&mode_acked, &mode_lock, &deadline) == 0 ||
				     s->seen_load[r] == mode;
			if (!ok)
				snprintf(why, why_len, "load %s not in effect after %d s: cpu %d %s thread",
					 load_names[mode], MODE_WAIT_S, c, role_names[r]);
		}
	}
	pthread_mutex_unlock(&mode_lock);
	for (int c = 0; c < MAX_CPUS && ok && mode != LOAD_BUSY; c++) {
		struct cpu_slot *s = &slots[c];
		if (!atomic_load_explicit(&s->started, memory_order_acquire))
			continue;
		ok = beats_reported(s, &deadline);
		if (!ok)
			snprintf(why, why_len, "load %s not in effect after %d s: cpu %d %s thread",
				 load_names[mode], MODE_WAIT_S, c, role_names[ROLE_REPORT]);
	}
	return ok;
}

/* ---- tick heartbeat ---- */

static void *ticker(void *arg)
{
	struct cpu_slot *s = arg;
	thread_begin(s, ROLE_TICK);
	for (uint64_t n = 1;; n++) {
		sleep_ns(TICK_NS);
		note_cpu(s, ROLE_TICK);
		emitf("tick", "{\"cpu\":%d,\"n\":%" PRIu64 ",\"tb\":%" PRIu64 "}", s->cpu, n, mftb());
	}
	return NULL;
}

/* ---- spinner: busy heartbeat and timebase watcher ---- */

/*
 * The spinner never blocks while the load mode is busy: no console output, no
 * mutex, no futex wait, no sleep.  It publishes its statistics and beats
 * under seqlocks only it writes, and wakes the reporter (a futex wake never
 * sleeps), which writes the beat.  A spinner that blocked would let its CPU
 * go idle, and a CPU entering idle reprograms its decrementer: after a
 * migration to a QEMU that lost the decrementer (7.2 and older under TCG)
 * that would hide the lost timer depending on console timing.
 *
 * After each beat it yields (sched_yield never sleeps: the spinner stays
 * runnable, the CPU stays busy).  On a CPU without timer interrupts nothing
 * else preempts the spinner, so a thread preempted there in the middle of
 * a line, holding the output mutex, would never finish it and every CPU's
 * output would stop; the yield lets it finish.
 */

/* The spinner's own state; only its thread touches it. */
struct spin {
	struct tb_stats batch;  /* since the last flush */
	uint64_t batch_gen;     /* reset_gen when the batch began */
	struct tb_stats total;  /* every batch merged since reset total_gen */
	uint64_t total_gen;
	uint64_t prev;          /* previous mftb sample */
	uint64_t iter;          /* loop iterations since the spinner started */
	uint64_t busy_every;    /* iterations per busy beat, from calibrate() */
	uint64_t countdown;     /* iterations to the next beat */
	uint64_t beat;          /* last busy beat number */
	unsigned warp_gen;      /* the last tbwarp request it took part in (or saw at start) */
};

/* Publish beat n (at iteration iter, mftb tb) and wake the reporter. */
static void publish_beat(struct cpu_slot *s, uint64_t n, uint64_t iter, uint64_t tb)
{
	seq_write_begin(&s->beat_seq);
	atomic_store_explicit(&s->beat.n, n, memory_order_relaxed);
	atomic_store_explicit(&s->beat.iter, iter, memory_order_relaxed);
	atomic_store_explicit(&s->beat.tb, tb, memory_order_relaxed);
	seq_write_end(&s->beat_seq);
	futex_wake(&s->beat_seq);
}

/*
 * The watcher: for consecutive samples prev, cur, a backward step prev - cur
 * or a forward gap cur - prev, keeping the largest of each (and where the
 * largest gap ended).
 */
static inline void watch(struct spin *sp, uint64_t cur)
{
	struct tb_stats *b = &sp->batch;
	if (cur < sp->prev) {
		if (sp->prev - cur > b->max_back)
			b->max_back = sp->prev - cur;
	} else if (cur - sp->prev > b->max_fwd) {
		b->max_fwd = cur - sp->prev;
		b->max_fwd_at = cur;
	}
	b->samples++;
	sp->prev = cur;
}

/* SPIN_BATCH samples, each watched; every busy_every iterations, a busy beat. */
static void spin_batch(struct cpu_slot *s, struct spin *sp)
{
	for (int i = 0; i < SPIN_BATCH; i++) {
		uint64_t cur = mftb();
		watch(sp, cur);
		sp->iter++;
		if (--sp->countdown == 0) {
			sp->countdown = sp->busy_every;
			note_cpu(s, ROLE_BUSY);
			publish_beat(s, ++sp->beat, sp->iter, cur);
			sched_yield();
		}
	}
	sp->batch.last = sp->prev;
}

/*
 * Merge the batch into the totals, unless a tbreset came since it began
 * (the totals restart at a reset), publish the totals, start a new batch.
 */
static void spin_flush(struct cpu_slot *s, struct spin *sp)
{
	const uint64_t gen = atomic_load_explicit(&s->reset_gen, memory_order_acquire);
	const struct tb_stats *b = &sp->batch;
	struct tb_stats *t = &sp->total;

	if (sp->total_gen != gen) {
		*t = (struct tb_stats){0};
		sp->total_gen = gen;
	}
	if (sp->batch_gen == gen) {
		t->samples += b->samples;
		if (b->max_back > t->max_back)
			t->max_back = b->max_back;
		if (b->max_fwd > t->max_fwd) {
			t->max_fwd = b->max_fwd;
			t->max_fwd_at = b->max_fwd_at;
		}
		t->last = b->last;
	}
	seq_write_begin(&s->stats_seq);
	atomic_store_explicit(&s->stats.gen, gen, memory_order_relaxed);
	atomic_store_explicit(&s->stats.samples, t->samples, memory_order_relaxed);
	atomic_store_explicit(&s->stats.max_back, t->max_back, memory_order_relaxed);
	atomic_store_explicit(&s->stats.max_fwd, t->max_fwd, memory_order_relaxed);
	atomic_store_explicit(&s->stats.max_fwd_at, t->max_fwd_at, memory_order_relaxed);
	atomic_store_explicit(&s->stats.last, t->last, memory_order_relaxed);
	seq_write_end(&s->stats_seq);
	sp->batch = (struct tb_stats){0};
	sp->batch_gen = gen;
}

/* s's statistics as its spinner last published them; zero if a tbreset came since. */
static struct tb_stats read_stats(struct cpu_slot *s)
{
	struct tb_stats t;
	uint64_t gen;
	unsigned seq;
	do {
		seq = seq_read_begin(&s->stats_seq);
		gen = atomic_load_explicit(&s->stats.gen, memory_order_relaxed);
		t.samples = atomic_load_explicit(&s->stats.samples, memory_order_relaxed);
		t.max_back = atomic_load_explicit(&s->stats.max_back, memory_order_relaxed);
		t.max_fwd = atomic_load_explicit(&s->stats.max_fwd, memory_order_relaxed);
		t.max_fwd_at = atomic_load_explicit(&s->stats.max_fwd_at, memory_order_relaxed);
		t.last = atomic_load_explicit(&s->stats.last, memory_order_relaxed);
	} while (seq_read_retry(&s->stats_seq, seq));
	if (gen != atomic_load_explicit(&s->reset_gen, memory_order_acquire))
		return (struct tb_stats){0};
	return t;
}

/*
 * Once, at start: count iterations of the real loop in a few short windows
 * (a fraction of a beat: the first load switch waits for calibration, so it
 * is kept to 100 ms) and keep the best, since interference (boot leftovers,
 * a busy host) only ever lowers a count.  After that the beat is driven by
 * the iteration count alone, so it measures CPU progress, not time.
 * Calibration samples do not count in the statistics.
 */
static void calibrate(struct cpu_slot *s, struct spin *sp)
{
	const uint64_t window = tb_freq / BUSY_PER_SECOND / CALIBRATION_SPLIT;
	uint64_t best = 0;
	sp->countdown = UINT64_MAX;
	sp->prev = mftb();
	for (int w = 0; w < CALIBRATION_WINDOWS; w++) {
		uint64_t start = mftb(), iter = sp->iter;
		do
			spin_batch(s, sp);
		while (sp->prev >= start && sp->prev - start < window);
		if (sp->iter - iter > best)
			best = sp->iter - iter;
	}
	sp->busy_every = best ? best * CALIBRATION_SPLIT : 1;
	sp->countdown = sp->busy_every;
	sp->batch = (struct tb_stats){0};
}

/* ---- tbwarp: the timebase across CPUs ---- */

/*
 * As Linux's check_tsc_warp: every spinner repeatedly takes a spin lock,
 * reads the last mftb any CPU published under it, reads its own and
 * publishes that.  With the reads ordered by the lock, a CPU whose own
 * sample is below the previous one another CPU took is behind it: a warp.
 * The lock only spins (a spinner never sleeps), and the requests reach the
 * spinners through a generation they poll between batches, so CPUs that
 * take no interrupts (a finding after some migrations) take part too.
 */
static atomic_uint warp_gen;       /* main bumps it per request */
static atomic_uint warp_expected;  /* spinners asked to take part */
static atomic_uint warp_arrived;   /* spinners at the rendezvous */
static atomic_uint warp_finished;  /* spinners done; main waits on it (futex) */
static atomic_bool warp_lock;
static uint64_t warp_last;         /* under warp_lock: the last sample, taken by warp_last_cpu */
static atomic_int warp_last_cpu = -1; /* written under warp_lock; -1: none yet */

static void warp_acquire(void)
{
	while (atomic_exchange_explicit(&warp_lock, true, memory_order_acquire))
		;
	__asm__ volatile("isync" ::: "memory"); /* no mftb before the lock is ours */
}

static bool warp_current(unsigned gen)
{
	return atomic_load_explicit(&warp_gen, memory_order_acquire) == gen;
}

/*
 * Request gen: meet the other spinners (up to WARP_MEET_S), then sample for
 * WARP_MS of this CPU's timebase.  Every mftb read also feeds the CPU's own
 * watcher, so the request leaves no gap in tbstats.
 */
static void warp_sample(struct cpu_slot *s, struct spin *sp, unsigned gen)
{
	struct warp_result r = {.min_gap = UINT64_MAX};
	uint64_t now = mftb(), start = now;

	watch(sp, now);
	atomic_fetch_add_explicit(&warp_arrived, 1, memory_order_acq_rel);
	while (atomic_load_explicit(&warp_arrived, memory_order_acquire) <
		       atomic_load_explicit(&warp_expected, memory_order_relaxed) &&
	       now - start < tb_freq * WARP_MEET_S && warp_current(gen)) {
		now = mftb();
		watch(sp, now);
	}
	for (start = now; now - start < tb_freq * WARP_MS / 1000 && warp_current(gen);) {
		/* Take turns, so that most samples follow another CPU's: a spin
		 * lock is not fair, and under TCG one vCPU can win it for
		 * milliseconds.  A CPU that stopped taking part costs WARP_TURN. */
		for (uint64_t t = now; atomic_load_explicit(&warp_last_cpu, memory_order_relaxed) == s->cpu &&
				       now - t < tb_freq / WARP_TURN;) {
			now = mftb();
			watch(sp, now);
		}
		warp_acquire();
		now = mftb();
		uint64_t prev = warp_last;
		int by = atomic_load_explicit(&warp_last_cpu, memory_order_relaxed);
		warp_last = now;
		atomic_store_explicit(&warp_last_cpu, s->cpu, memory_order_relaxed);
		atomic_store_explicit(&warp_lock, false, memory_order_release);
		watch(sp, now);
		r.samples++;
		if (by < 0 || by == s->cpu)
			continue;
		r.cross++;
		if (prev > now) {
			if (prev - now > r.max_warp)
				r.max_warp = prev - now;
		} else {
			if (now - prev < r.min_gap)
				r.min_gap = now - prev;
			if (now - prev > r.max_gap)
				r.max_gap = now - prev;
		}
	}
	if (r.min_gap == UINT64_MAX)
		r.min_gap = 0;
	sp->batch.last = sp->prev;
	s->warp = r;
	atomic_store_explicit(&s->warp_done, gen, memory_order_release);
	atomic_fetch_add_explicit(&warp_finished, 1, memory_order_release);
	futex_wake(&warp_finished);
}

static void *spinner(void *arg)
{
	struct cpu_slot *s = arg;
	struct spin sp = {0};
	thread_begin(s, ROLE_BUSY);
	sp.warp_gen = atomic_load_explicit(&warp_gen, memory_order_acquire);
	calibrate(s, &sp);
	for (;;) {
		wait_for_load(s, ROLE_BUSY, LOAD_BUSY);
		/* A new busy period: the time spent parked is not a gap. */
		sp.batch_gen = atomic_load_explicit(&s->reset_gen, memory_order_acquire);
		sp.prev = mftb();
		do {
			spin_batch(s, &sp);
			unsigned gen = atomic_load_explicit(&warp_gen, memory_order_acquire);
			if (gen != sp.warp_gen) {
				sp.warp_gen = gen;
				warp_sample(s, &sp, gen);
			}
			spin_flush(s, &sp);
		} while (load_is(LOAD_BUSY));
		note_cpu(s, ROLE_BUSY);
	}
	return NULL;
}

/* ---- reporter: writes the spinner's busy beats ---- */

/*
 * Woken by the spinner at each beat; writes the latest beat it finds (one
 * that came while it was writing the previous one is passed over: n skips).
 * The line carries the spinner's own n, iter and mftb at the beat, so it
 * still measures CPU progress however late the console lets it out.
 */
static void *reporter(void *arg)
{
	struct cpu_slot *s = arg;
	unsigned seen = 0; /* beat_seq of the last beat written; 0 before the first */
	thread_begin(s, ROLE_REPORT);
	for (;;) {
		unsigned seq = atomic_load_explicit(&s->beat_seq, memory_order_acquire);
		if (seq == seen) {
			futex_wait(&s->beat_seq, seq, NULL);
			continue;
		}
		uint64_t n, iter, tb;
		do {
			seq = seq_read_begin(&s->beat_seq);
			n = atomic_load_explicit(&s->beat.n, memory_order_relaxed);
			iter = atomic_load_explicit(&s->beat.iter, memory_order_relaxed);
			tb = atomic_load_explicit(&s->beat.tb, memory_order_relaxed);
		} while (seq_read_retry(&s->beat_seq, seq));
		note_cpu(s, ROLE_REPORT);
		emitf("busy", "{\"cpu\":%d,\"n\":%" PRIu64 ",\"iter\":%" PRIu64 ",\"tb\":%" PRIu64 "}",
		      s->cpu, n, iter, tb);
		seen = seq;
		atomic_store_explicit(&s->beat_reported, seq, memory_order_release);
		futex_wake(&s->beat_reported);
	}
	return NULL;
}

/* ---- timer load: a 1 ms sleep in a loop ---- */

static void *timer_load(void *arg)
{
	struct cpu_slot *s = arg;
	thread_begin(s, ROLE_TIMER);
	for (;;) {
		wait_for_load(s, ROLE_TIMER, LOAD_TIMER);
		while (load_is(LOAD_TIMER)) {
			sleep_ns(TIMER_NS);
			atomic_fetch_add_explicit(&s->timer_wakeups, 1, memory_order_relaxed);
			note_cpu(s, ROLE_TIMER);
		}
	}
	return NULL;
}

/* ---- IPI round trips ---- */

static uint64_t pack(unsigned seq, int cpu)
{
	return (uint64_t)seq << 16 | (uint64_t)(cpu + 1);
}

/* Put (seq, cpu) in one of to's mailboxes and wake its ipi thread. */
static void ipi_post(struct cpu_slot *to, atomic_uint_least64_t *mailbox, unsigned seq, int cpu)
{
	atomic_store_explicit(mailbox, pack(seq, cpu), memory_order_release);
	atomic_fetch_add_explicit(&to->ipi_gen, 1, memory_order_release);
	futex_wake(&to->ipi_gen);
}

/*
 * Wait until *word == want or timeout_ticks of timebase have passed since
 * start (blocked in the futex, never spinning); true if it came.
 */
static bool ipi_await(atomic_uint *word, unsigned want, uint64_t start, uint64_t timeout_ticks)
{
	for (;;) {
		unsigned now = atomic_load_explicit(word, memory_order_acquire);
		if (now == want)
			return true;
		uint64_t spent = mftb() - start;
		if (spent >= timeout_ticks)
			return false;
		uint64_t left_ns = (timeout_ticks - spent) * 1000000000ULL / tb_freq + 1;
		struct timespec rel = {(time_t)(left_ns / 1000000000ULL), (long)(left_ns % 1000000000ULL)};
		futex_wait(word, now, &rel);
	}
}

/* On s's CPU: wake the ipi thread of to, wait for its pong, time the round trip. */
static int64_t ipi_round_trip(struct cpu_slot *s, struct cpu_slot *to, unsigned seq)
{
	uint64_t start = mftb();
	ipi_post(to, &to->ipi_ping, seq, s->cpu);
	if (!ipi_await(&s->ipi_pong, seq, start, tb_freq * IPI_ANSWER_S))
		return -1;
	return (int64_t)(mftb() - start);
}

static void *ipi_thread(void *arg)
{
	struct cpu_slot *s = arg;
	thread_begin(s, ROLE_IPI);
	/*
	 * Real-time, so that a wake-up preempts a spinning CPU at once: without
	 * it, in load mode busy the woken thread waits for the spinner's next
	 * scheduler tick and the round trip measures CFS, not the IPI.
	 */
	const struct sched_param fifo = {.sched_priority = 1};
	if ((errno = pthread_setschedparam(pthread_self(), SCHED_FIFO, &fifo)) != 0) {
		char text[96];
		snprintf(text, sizeof(text), "cpu %d: ipi thread not real-time: %m", s->cpu);
		reply_error(-1, text);
	}
	for (;;) {
		unsigned gen = atomic_load_explicit(&s->ipi_gen, memory_order_acquire);
		uint64_t ping = atomic_exchange_explicit(&s->ipi_ping, 0, memory_order_acquire);
		uint64_t measure = atomic_exchange_explicit(&s->ipi_measure, 0, memory_order_acquire);
		if (!ping && !measure) {
			futex_wait(&s->ipi_gen, gen, NULL);
			continue;
		}
		note_cpu(s, ROLE_IPI);
		if (ping) {
			struct cpu_slot *from = &slots[(ping & 0xffff) - 1];
			atomic_store_explicit(&from->ipi_pong, (unsigned)(ping >> 16), memory_order_release);
			futex_wake(&from->ipi_pong);
		}
		if (measure) {
			unsigned seq = (unsigned)(measure >> 16);
			int64_t ticks = ipi_round_trip(s, &slots[(measure & 0xffff) - 1], seq);
			atomic_store_explicit(&s->ipi_ticks, ticks, memory_order_relaxed);
			atomic_store_explicit(&s->ipi_done, seq, memory_order_release);
			futex_wake(&s->ipi_done);
		}
	}
	return NULL;
}

/* Round trips for every ordered pair of CPUs with threads, one pair at a time. */
static void do_ipi(long long req)
{
	static unsigned seq;
	struct buf b = {0};
	bool first = true;

	buf_printf(&b, "{\"req\":%lld,\"pairs\":[", req);
	for (int a = 0; a < MAX_CPUS; a++) {
		if (!atomic_load_explicit(&slots[a].started, memory_order_acquire))
			continue;
		for (int c = 0; c < MAX_CPUS; c++) {
			if (c == a || !atomic_load_explicit(&slots[c].started, memory_order_acquire))
				continue;
			/* Skip 0 on wrap-around: it means "empty" in a mailbox. */
			if (++seq == 0)
				++seq;
			ipi_post(&slots[a], &slots[a].ipi_measure, seq, c);
			/* The measuring thread gives up after IPI_ANSWER_S; allow it
			 * as long again to be scheduled and report. */
			int64_t ticks = -1;
			if (ipi_await(&slots[a].ipi_done, seq, mftb(), tb_freq * IPI_ANSWER_S * 2))
				ticks = atomic_load_explicit(&slots[a].ipi_ticks, memory_order_relaxed);
			buf_printf(&b, "%s{\"from\":%d,\"to\":%d,\"ticks\":%" PRId64 "}",
				   first ? "" : ",", a, c, ticks);
			first = false;
		}
	}
	buf_printf(&b, "]}");
	emit("ipi", b.data);
	buf_free(&b);
}

static void do_probe(long long req)
{
	struct buf b = {0};
	const char *intc;
	struct buf names = {0};

	json_intc(&names, &intc);
	buf_printf(&b, "{\"req\":%lld,\"tb\":%" PRIu64 ",\"tb_freq\":%" PRIu64 ",\"uptime\":",
		   req, mftb(), cpuinfo_tb_freq());
	json_file_field(&b, "/proc/uptime", false);
	buf_printf(&b, ",\"intc\":");
	buf_json_str(&b, intc);
	buf_printf(&b, ",\"intc_names\":%s,\"cpus_online\":", names.data);
	json_file_field(&b, "/sys/devices/system/cpu/online", true);
	buf_printf(&b, ",\"cpus_present\":");
	json_file_field(&b, "/sys/devices/system/cpu/present", true);
	buf_printf(&b, ",\"mem_total_kb\":%" PRIu64, meminfo_total_kb());
	buf_printf(&b, ",\"load\":\"%s\",\"threads\":[",
		   load_names[atomic_load_explicit(&load_mode, memory_order_relaxed)]);
	bool first = true;
	for (int c = 0; c < MAX_CPUS; c++) {
		struct cpu_slot *s = &slots[c];
		if (!atomic_load_explicit(&s->started, memory_order_acquire))
			continue;
		for (enum role r = 0; r < NROLES; r++) {
			buf_printf(&b, "%s{\"role\":\"%s\",\"cpu\":%d,\"ran_on\":%d}", first ? "" : ",",
				   role_names[r], c,
				   atomic_load_explicit(&s->ran_on[r], memory_order_relaxed));
			first = false;
		}
	}
	buf_printf(&b, "],\"pci\":");
	json_pci(&b);
	buf_printf(&b, ",\"phb_ranges\":");
	json_phb_ranges(&b);
	buf_printf(&b, "}");
	emit("probe", b.data);
	buf_free(&names);
	buf_free(&b);
}

/* ---- tbstats, tbreset ---- */

static void do_tbstats(long long req)
{
	struct buf b = {0};
	bool first = true;

	buf_printf(&b, "{\"req\":%lld,\"cpus\":[", req);
	for (int c = 0; c < MAX_CPUS; c++) {
		struct cpu_slot *s = &slots[c];
		if (!atomic_load_explicit(&s->started, memory_order_acquire))
			continue;
		struct tb_stats t = read_stats(s);
		buf_printf(&b,
			   "%s{\"cpu\":%d,\"samples\":%" PRIu64 ",\"max_back\":%" PRIu64
			   ",\"max_fwd\":%" PRIu64 ",\"max_fwd_at\":%" PRIu64 ",\"last\":%" PRIu64
			   ",\"timer_wakeups\":%" PRIuFAST64 "}",
			   first ? "" : ",", c, t.samples, t.max_back, t.max_fwd, t.max_fwd_at, t.last,
			   atomic_load_explicit(&s->timer_wakeups, memory_order_relaxed));
		first = false;
	}
	buf_printf(&b, "]}");
	emit("tbstats", b.data);
	buf_free(&b);
}

/*
 * Ask every spinner for a warp measurement and wait (in a futex, so this CPU
 * can still run the others' threads) until all are done or the request has
 * had twice its time; a CPU that did not take part reports no samples.
 */
static void do_tbwarp(long long req)
{
	if (!load_is(LOAD_BUSY)) {
		reply_error(req, "tbwarp needs load mode busy (the spinners sample)");
		return;
	}
	unsigned expected = 0;
	for (int c = 0; c < MAX_CPUS; c++)
		expected += atomic_load_explicit(&slots[c].started, memory_order_acquire);
	warp_acquire();
	atomic_store_explicit(&warp_last_cpu, -1, memory_order_relaxed);
	atomic_store_explicit(&warp_lock, false, memory_order_release);
	atomic_store_explicit(&warp_expected, expected, memory_order_relaxed);
	atomic_store_explicit(&warp_arrived, 0, memory_order_relaxed);
	atomic_store_explicit(&warp_finished, 0, memory_order_relaxed);
	unsigned gen = atomic_fetch_add_explicit(&warp_gen, 1, memory_order_release) + 1;

	uint64_t start = mftb(), limit = tb_freq * 2 * (WARP_MEET_S + WARP_MS / 1000 + 1);
	for (;;) {
		unsigned done = atomic_load_explicit(&warp_finished, memory_order_acquire);
		uint64_t spent = mftb() - start;
		if (done >= expected || spent >= limit)
			break;
		uint64_t left_ns = (limit - spent) * 1000000000ULL / tb_freq + 1;
		struct timespec rel = {(time_t)(left_ns / 1000000000ULL), (long)(left_ns % 1000000000ULL)};
		futex_wait(&warp_finished, done, &rel);
	}

	struct buf b = {0};
	bool first = true;
	buf_printf(&b, "{\"req\":%lld,\"window\":%" PRIu64 ",\"cpus\":[", req,
		   tb_freq * WARP_MS / 1000);
	for (int c = 0; c < MAX_CPUS; c++) {
		struct cpu_slot *s = &slots[c];
		if (!atomic_load_explicit(&s->started, memory_order_acquire))
			continue;
		struct warp_result r = {0};
		if (atomic_load_explicit(&s->warp_done, memory_order_acquire) == gen)
			r = s->warp;
		buf_printf(&b,
			   "%s{\"cpu\":%d,\"samples\":%" PRIu64 ",\"cross\":%" PRIu64
			   ",\"max_warp\":%" PRIu64 ",\"min_gap\":%" PRIu64 ",\"max_gap\":%" PRIu64 "}",
			   first ? "" : ",", c, r.samples, r.cross, r.max_warp, r.min_gap, r.max_gap);
		first = false;
	}
	buf_printf(&b, "]}");
	emit("tbwarp", b.data);
	buf_free(&b);
}

static void do_tbreset(long long req)
{
	for (int c = 0; c < MAX_CPUS; c++) {
		struct cpu_slot *s = &slots[c];
		if (!atomic_load_explicit(&s->started, memory_order_acquire))
			continue;
		/* The spinner drops its figures when it next sees the new generation;
		 * until then read_stats() reads them as zero. */
		atomic_fetch_add_explicit(&s->reset_gen, 1, memory_order_release);
		atomic_store_explicit(&s->timer_wakeups, 0, memory_order_relaxed);
	}
	emitf("ok", "{\"req\":%lld}", req);
}

/* ---- CPUs coming online ---- */

static void start_cpu(int c)
{
	static void *(*const bodies[NROLES])(void *) = {ticker, spinner, timer_load, ipi_thread,
							reporter};
	struct cpu_slot *s = &slots[c];
	pthread_attr_t attr;
	pthread_t tid;

	s->cpu = c;
	for (enum role r = 0; r < NROLES; r++) {
		atomic_init(&s->ran_on[r], -1);
		s->seen_load[r] = -1; /* not LOAD_IDLE (0): set_load must wait for the thread */
	}
	if (pthread_attr_init(&attr) != 0 || pthread_attr_setstacksize(&attr, THREAD_STACK) != 0 ||
	    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) != 0)
		die("pthread_attr");
	pthread_mutex_lock(&start_lock);
	for (enum role r = 0; r < NROLES; r++)
		if ((errno = pthread_create(&tid, &attr, bodies[r], s)) != 0)
			die("pthread_create");
	atomic_store_explicit(&s->started, true, memory_order_release);
	emitf("cpu", "{\"cpu\":%d}", c);
	pthread_mutex_unlock(&start_lock);
	pthread_attr_destroy(&attr);
}

/* The CPU main and the supervisor are pinned to (the lowest online at start). */
static int home_cpu;

/* Whether threads can be pinned to cpu yet: a CPU that has just come online (hotplug) is in
 * /sys/devices/system/cpu/online before the scheduler activates it, and until then
 * sched_setaffinity to it fails with EINVAL. Tried on the calling thread, which goes home. */
static bool schedulable(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET((size_t)cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0)
		return false;
	CPU_ZERO(&set);
	CPU_SET((size_t)home_cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0)
		die("sched_setaffinity home");
	return true;
}

/* Start threads on every CPU in the online list that has none yet and can be pinned to (one
 * that cannot yet is tried again at the next scan). */
static void start_online_cpus(const char *online)
{
	static bool warned, unparsable; /* say each once, not every SCAN_NS */
	bool set[MAX_CPUS];
	unsigned long beyond;

	if (!parse_cpulist(online, set, &beyond)) {
		char text[160];
		snprintf(text, sizeof(text), "cannot parse the online CPU list '%.100s'", online);
		if (!unparsable)
			reply_error(-1, text);
		unparsable = true;
		return;
	}
	if (beyond && !warned) {
		char text[96];
		snprintf(text, sizeof(text), "%lu online CPUs numbered %d or above are not watched",
			 beyond, MAX_CPUS);
		reply_error(-1, text);
		warned = true;
	}
	for (int c = 0; c < MAX_CPUS; c++)
		if (set[c] && !atomic_load_explicit(&slots[c].started, memory_order_relaxed) &&
		    schedulable(c))
			start_cpu(c);
}

static void *supervisor(void *arg)
{
	(void)arg;
	for (;;) {
		struct buf online = {0};
		sleep_ns(SCAN_NS);
		if (slurp("/sys/devices/system/cpu/online", &online))
			start_online_cpus(online.data);
		buf_free(&online);
	}
	return NULL;
}

/* ---- commands ---- */

/* Decimal request id, or -1 if s is not 1..18 digits. */
/* ---- PCI hotplug: the part drmgr plays in a distribution ----
 *
 * The pseries kernel handles CPU and memory hotplug events itself but puts a
 * PCI one on the RTAS event log (/proc/powerpc/rtas/error_log) for user space
 * (rtas_errd, which runs drmgr).  The dlpar thread reads that log and does
 * what `drmgr -c pci -a|-r` does, through the same interfaces: RTAS calls by
 * the rtas syscall (set-indicator, get-sensor-state, set-power-level,
 * ibm,configure-connector with its work area in the kernel's RTAS user
 * buffer, mapped through /dev/mem), the new device tree nodes written to
 * /proc/ppc64/ofdt, and the slot's rpaphp power file.  Each handled event
 * is reported as one `dlpar` line (PROTOCOL.md, "PCI hotplug").
 */

#define RTAS_EVENT_LOG "/proc/powerpc/rtas/error_log"
#define RTAS_RMO_BUFFER "/proc/powerpc/rtas/rmo_buffer"
#define RTAS_LOG_READ 8192      /* >= rtas-error-log-max + 4; the kernel copies its whole entry */
#define SENSOR_DR_ENTITY 9003   /* get-sensor-state: is a card in the slot */
#define INDICATOR_ISOLATION 9001
#define INDICATOR_DR 9002       /* the slot's LED */
#define ISOLATE 0
#define UNISOLATE 1
#define LED_OFF 0
#define LED_ON 1
#define ENTITY_PRESENT 1
#define POWER_LIVE_INSERT 0xffffffffu /* ibm,drc-power-domains: no power control */
#define HP_SECTION_ID 0x4850    /* "HP": the hotplug section of a v6 event log */
#define HP_TYPE_SLOT 3          /* QEMU's RTAS_LOG_V6_HP_TYPE_SLOT */
#define HP_TYPE_PCI 5           /* QEMU's RTAS_LOG_V6_HP_TYPE_PCI */
#define HP_ADD 1
#define HP_REMOVE 2
#define HP_ID_DRC_INDEX 2
#define RTAS_BUSY (-2)
#define CC_WORK_AREA 4096
#define PRESENT_WAIT_S 30       /* as drmgr: how long a card may take to show in its slot */

struct rtas_syscall_args {      /* struct rtas_args of the rtas syscall, big-endian */
	uint32_t token, nargs, nret;
	uint32_t args[16];
	uint64_t rets;
};

static uint32_t be32_at(const void *p)
{
	const unsigned char *b = p;
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static uint16_t be16_at(const void *p)
{
	const unsigned char *b = p;
	return (uint16_t)(b[0] << 8 | b[1]);
}

/* The RTAS token of a call, from /proc/device-tree/rtas/<name>; 0 if absent. */
static uint32_t rtas_token(const char *name)
{
	char path[128];
	struct buf b = {0};
	uint32_t token = 0;
	snprintf(path, sizeof(path), "/proc/device-tree/rtas/%s", name);
	if (slurp(path, &b) && b.len == 4)
		token = be32_at(b.data);
	buf_free(&b);
	return token;
}

/*
 * Call RTAS: nargs inputs, nret outputs (out[0] is the status).  Retried while
 * RTAS says busy (-2, 9900-9905).  Returns the status, or a negative errno
 * from the syscall negated below -10000 so that it cannot look like RTAS's own.
 */
static int rtas_call(const char *name, int nargs, int nret, const uint32_t *in, uint32_t *out)
{
	uint32_t token = rtas_token(name);
	if (!token)
		return -10000 - ENOENT;
	for (;;) {
		struct rtas_syscall_args a = {0};
		a.token = htobe32(token);
		a.nargs = htobe32((uint32_t)nargs);
		a.nret = htobe32((uint32_t)nret);
		for (int i = 0; i < nargs; i++)
			a.args[i] = htobe32(in[i]);
		if (syscall(SYS_rtas, &a) != 0)
			return -10000 - errno;
		for (int i = 0; i < nret; i++)
			out[i] = be32toh(a.args[nargs + i]);
		int status = (int)out[0];
		if (status == RTAS_BUSY)
			sleep_ns(1000000);
		else if (status >= 9900 && status <= 9905)
			sleep_ns(1000000L * (status == 9900 ? 1 : 10));
		else
			return status;
	}
}

static int set_indicator(uint32_t type, uint32_t index, uint32_t state)
{
	uint32_t in[3] = {type, index, state}, out[1];
	return rtas_call("set-indicator", 3, 1, in, out);
}

static int dr_entity_sense(uint32_t index, uint32_t *state)
{
	uint32_t in[2] = {SENSOR_DR_ENTITY, index}, out[2];
	int rc = rtas_call("get-sensor-state", 2, 2, in, out);
	*state = out[1];
	return rc;
}

static int set_power(uint32_t domain, uint32_t level)
{
	uint32_t in[2] = {domain, level}, out[2];
	if (domain == POWER_LIVE_INSERT)
		return 0;
	return rtas_call("set-power-level", 2, 2, in, out);
}

/* A hotplug slot as the PHB's device tree node describes it. */
struct pci_slot {
	char phb[160];          /* OF path of the PHB, "/pci@800000020000000" */
	char name[64];          /* ibm,drc-names entry: rpaphp's slot name */
	uint32_t power_domain;
};

/* The i-th string of a DRC list property: a count cell, then NUL-terminated strings. */
static bool drc_string(const struct buf *prop, uint32_t i, char *out, size_t size)
{
	size_t at = 4;
	for (uint32_t k = 0; at < prop->len; k++) {
		const char *s = prop->data + at;
		size_t n = strnlen(s, prop->len - at);
		if (k == i) {
			snprintf(out, size, "%.*s", (int)n, s);
			return true;
		}
		at += n + 1;
	}
	return false;
}

/* Which PHB lists drc in its ibm,drc-indexes, and the slot's name and power domain. */
static bool find_pci_slot(uint32_t drc, struct pci_slot *slot)
{
	size_t n;
	char **phbs = list_dir("/proc/device-tree", "pci@", &n);
	bool found = false;
	for (size_t p = 0; p < n && !found; p++) {
		char path[320];
		struct buf idx = {0}, names = {0}, power = {0};
		snprintf(path, sizeof(path), "/proc/device-tree/%s/ibm,drc-indexes", phbs[p]);
		if (slurp(path, &idx) && idx.len >= 4) {
			uint32_t count = be32_at(idx.data);
			for (uint32_t i = 0; i < count && 4 + 4 * (i + 1) <= idx.len; i++) {
				if (be32_at(idx.data + 4 + 4 * i) != drc)
					continue;
				snprintf(path, sizeof(path), "/proc/device-tree/%s/ibm,drc-names", phbs[p]);
				found = slurp(path, &names) && drc_string(&names, i, slot->name, sizeof(slot->name));
				snprintf(path, sizeof(path), "/proc/device-tree/%s/ibm,drc-power-domains", phbs[p]);
				slot->power_domain = slurp(path, &power) && power.len >= 8 + 4 * i
					? be32_at(power.data + 4 + 4 * i) : POWER_LIVE_INSERT;
				snprintf(slot->phb, sizeof(slot->phb), "/%s", phbs[p]);
				break;
			}
		}
		buf_free(&idx);
		buf_free(&names);
		buf_free(&power);
	}
	free_list(phbs, n);
	return found;
}

static bool write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "we");
	if (!f)
		return false;
	bool ok = fwrite(data, 1, len, f) == len;
	return fclose(f) == 0 && ok;
}

/* The kernel's RTAS user buffer, mapped once: configure-connector's work area. */
static unsigned char *rmo_map;
static uint32_t rmo_phys;

static bool map_rmo(char *why, size_t why_len)
{
	struct buf b = {0};
	unsigned long long addr = 0;
	unsigned size = 0;
	if (rmo_map)
		return true;
	bool ok = slurp(RTAS_RMO_BUFFER, &b) && sscanf(b.data, "%llx %x", &addr, &size) == 2;
	buf_free(&b);
	if (!ok || size < CC_WORK_AREA) {
		snprintf(why, why_len, "%s unreadable", RTAS_RMO_BUFFER);
		return false;
	}
	int fd = open("/dev/mem", O_RDWR | O_SYNC | O_CLOEXEC);
	void *p = fd < 0 ? MAP_FAILED : mmap(NULL, CC_WORK_AREA, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
	                                     (off_t)addr);
	if (fd >= 0)
		close(fd);
	if (p == MAP_FAILED) {
		snprintf(why, why_len, "mapping the RTAS buffer at %#llx through /dev/mem: %m", addr);
		return false;
	}
	rmo_map = p;
	rmo_phys = (uint32_t)addr;
	return true;
}

/*
 * ibm,configure-connector for drc, the result as /proc/ppc64/ofdt commands
 * ("add_node <path> <name> <length> <bytes> ...", one per node, parents first)
 * appended to cmds, each after its length (a size_t: values hold NUL bytes).
 * False with why on an RTAS error.
 */
static bool configure_connector(uint32_t drc, const char *phb, struct buf *cmds, char *why, size_t why_len)
{
	char stack[8][256];     /* the OF path of the node at each depth */
	int depth = -1;
	struct buf node = {0};  /* the add_node command being built */
	if (!map_rmo(why, why_len))
		return false;
	memset(rmo_map, 0, CC_WORK_AREA);
	memcpy(rmo_map, &(uint32_t){htobe32(drc)}, 4);
	for (;;) {
		uint32_t in[2] = {rmo_phys, 0}, out[1];
		int rc = rtas_call("ibm,configure-connector", 2, 1, in, out);
		const unsigned char *wa = rmo_map;
		if (rc == 1 || rc == 2 || rc == 4 || rc == 0) { /* a node ends: write what it had */
			if (node.len) {
				buf_reserve(cmds, sizeof(node.len) + node.len);
				memcpy(cmds->data + cmds->len, &node.len, sizeof(node.len));
				memcpy(cmds->data + cmds->len + sizeof(node.len), node.data, node.len);
				cmds->len += sizeof(node.len) + node.len;
			}
			node.len = 0;
		}
		if (rc == 0)
			break;
		if (rc == 1 || rc == 2) {       /* next sibling, next child */
			const char *name = (const char *)wa + be32_at(wa + 8);
			if (rc == 2)
				depth++;
			if (depth < 0 || depth >= 8) {
				snprintf(why, why_len, "configure-connector: node nesting %d", depth);
				buf_free(&node);
				return false;
			}
			snprintf(stack[depth], sizeof(stack[depth]), "%s/%s", depth ? stack[depth - 1] : phb, name);
			buf_printf(&node, "add_node %s", stack[depth]);
		} else if (rc == 3 && depth >= 0) {    /* next property of the current node */
			const char *name = (const char *)wa + be32_at(wa + 8);
			uint32_t len = be32_at(wa + 12);
			buf_printf(&node, " %s %u ", name, len);
			buf_reserve(&node, len);
			memcpy(node.data + node.len, wa + be32_at(wa + 16), len);
			node.len += len;
			node.data[node.len] = '\0';
		} else if (rc == 4) {   /* back to the parent */
			depth--;
		} else {
			snprintf(why, why_len, "configure-connector returned %d", rc);
			buf_free(&node);
			return false;
		}
	}
	buf_free(&node);
	return true;
}

/* Paths of the PHB's child nodes whose ibm,my-drc-index is drc (what the slot holds). */
static size_t slot_nodes(const struct pci_slot *slot, uint32_t drc, char paths[][256], size_t max)
{
	char dir[200];
	size_t n, found = 0;
	snprintf(dir, sizeof(dir), "/proc/device-tree%s", slot->phb);
	char **kids = list_dir(dir, "", &n);
	for (size_t i = 0; i < n && found < max; i++) {
		char path[512];
		struct buf b = {0};
		snprintf(path, sizeof(path), "%s/%s/ibm,my-drc-index", dir, kids[i]);
		if (slurp(path, &b) && b.len == 4 && be32_at(b.data) == drc)
			snprintf(paths[found++], 256, "%s/%s", slot->phb, kids[i]);
		buf_free(&b);
	}
	free_list(kids, n);
	return found;
}

/*
 * Remove the PCI functions whose device tree node is one of nodes, through each one's sysfs
 * remove file: what drmgr does for QEMU's slots, as rpaphp's slot power file would remove every
 * device on the PHB's bus (QEMU puts every slot on the root bus).
 */
static bool remove_functions(char nodes[][256], size_t n, char *why, size_t why_len)
{
	size_t count;
	bool ok = true;
	char **devs = list_dir("/sys/bus/pci/devices", "", &count);
	for (size_t d = 0; d < count && ok; d++) {
		char path[320];
		struct buf spec = {0};
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/devspec", devs[d]);
		if (slurp(path, &spec)) {
			rstrip(&spec);
			for (size_t i = 0; i < n; i++) {
				if (strcmp(spec.data, nodes[i]) != 0)
					continue;
				snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/remove", devs[d]);
				if (!write_file(path, "1", 1)) {
					snprintf(why, why_len, "%.150s: %m", path);
					ok = false;
				}
			}
		}
		buf_free(&spec);
	}
	free_list(devs, count);
	return ok;
}

/* drmgr -c pci -a: a card came into slot drc.  Returns the failed step, NULL on success. */
static const char *pci_add(uint32_t drc, const struct pci_slot *slot, char *why, size_t why_len)
{
	uint32_t state = 0;
	int rc;
	struct buf cmds = {0};
	if ((rc = set_indicator(INDICATOR_DR, drc, LED_ON)) != 0)
		return snprintf(why, why_len, "rc %d", rc), "set-indicator dr-indicator on";
	for (int i = 0; (rc = dr_entity_sense(drc, &state)) == 0 && state != ENTITY_PRESENT; i++) {
		if (i == PRESENT_WAIT_S * 10)
			return snprintf(why, why_len, "sensor state %u", state), "dr-entity-sense";
		sleep_ns(100000000L);
	}
	if (rc != 0)
		return snprintf(why, why_len, "rc %d", rc), "dr-entity-sense";
	if ((rc = set_power(slot->power_domain, 100)) != 0)
		return snprintf(why, why_len, "rc %d", rc), "set-power-level on";
	if ((rc = set_indicator(INDICATOR_ISOLATION, drc, UNISOLATE)) != 0)
		return snprintf(why, why_len, "rc %d", rc), "set-indicator unisolate";
	if (!configure_connector(drc, slot->phb, &cmds, why, why_len)) {
		set_indicator(INDICATOR_ISOLATION, drc, ISOLATE);
		return "configure-connector";
	}
	for (size_t at = 0, len; at < cmds.len; at += sizeof(len) + len) {
		memcpy(&len, cmds.data + at, sizeof(len));
		const char *cmd = cmds.data + at + sizeof(len);
		if (!write_file("/proc/ppc64/ofdt", cmd, len)) {
			snprintf(why, why_len, "%.60s: %m", cmd);
			buf_free(&cmds);
			set_indicator(INDICATOR_ISOLATION, drc, ISOLATE);
			return "device tree add_node";
		}
	}
	buf_free(&cmds);
	/* as drmgr for QEMU's slots: the PCI core probes the new function (rpaphp's slot power file
	 * works on the whole bus, and QEMU puts every slot on the PHB's root bus) */
	if (!write_file("/sys/bus/pci/rescan", "1", 1))
		return snprintf(why, why_len, "/sys/bus/pci/rescan: %m"), "PCI rescan";
	return NULL;
}

/* drmgr -c pci -r: the card in slot drc is to go.  Returns the failed step, NULL on success. */
static const char *pci_remove(uint32_t drc, const struct pci_slot *slot, char *why, size_t why_len)
{
	char nodes[4][256];
	int rc;
	size_t n = slot_nodes(slot, drc, nodes, 4);
	if (!remove_functions(nodes, n, why, why_len))
		return "PCI remove";
	for (size_t i = 0; i < n; i++) {
		char cmd[300];
		int len = snprintf(cmd, sizeof(cmd), "remove_node %s", nodes[i]);
		if (!write_file("/proc/ppc64/ofdt", cmd, (size_t)len))
			return snprintf(why, why_len, "%.120s: %m", nodes[i]), "device tree remove_node";
	}
	if ((rc = set_indicator(INDICATOR_ISOLATION, drc, ISOLATE)) != 0)
		return snprintf(why, why_len, "rc %d", rc), "set-indicator isolate";
	if ((rc = set_power(slot->power_domain, 0)) != 0)
		return snprintf(why, why_len, "rc %d", rc), "set-power-level off";
	if ((rc = set_indicator(INDICATOR_DR, drc, LED_OFF)) != 0)
		return snprintf(why, why_len, "rc %d", rc), "set-indicator dr-indicator off";
	return NULL;
}

/* The hotplug section of a v6 RTAS event log (the kernel's get_pseries_errorlog). */
static const unsigned char *hp_section(const unsigned char *log, size_t len)
{
	if (len < 8 || (log[0] & 0xff) < 6)
		return NULL;
	size_t ext = be32_at(log + 4), at = 8 + 16; /* fixed part, v6 extended header + company id */
	size_t end = 8 + ext < len ? 8 + ext : len;
	while (at + 8 <= end) {
		uint16_t id = be16_at(log + at), size = be16_at(log + at + 2);
		if (id == HP_SECTION_ID && at + 16 <= end)
			return log + at + 8;
		if (size < 8)
			return NULL;
		at += size;
	}
	return NULL;
}

static void handle_event(const unsigned char *log, size_t len, uint64_t tb_event)
{
	const unsigned char *hp = hp_section(log, len);
	char why[200] = "";
	struct pci_slot slot = {0};
	if (!hp || (hp[0] != HP_TYPE_PCI && hp[0] != HP_TYPE_SLOT))
		return;         /* not a PCI hotplug: not ours */
	uint32_t drc = be32_at(hp + 4);
	const char *action = hp[1] == HP_ADD ? "add" : hp[1] == HP_REMOVE ? "remove" : "unknown";
	const char *failed = NULL;
	if (hp[2] != HP_ID_DRC_INDEX || hp[1] == 0 || hp[1] > HP_REMOVE)
		failed = "event", snprintf(why, sizeof(why), "action %u, id type %u not handled", hp[1], hp[2]);
	else if (!find_pci_slot(drc, &slot))
		failed = "find slot", snprintf(why, sizeof(why), "no PHB lists DRC %#x", drc);
	else
		failed = hp[1] == HP_ADD ? pci_add(drc, &slot, why, sizeof(why))
		                         : pci_remove(drc, &slot, why, sizeof(why));
	struct buf b = {0};
	buf_printf(&b, "{\"drc\":%u,\"action\":\"%s\",\"slot\":", drc, action);
	buf_json_str(&b, slot.name);
	buf_printf(&b, ",\"failed\":");
	buf_json_str(&b, failed ? failed : "");
	buf_printf(&b, ",\"why\":");
	buf_json_str(&b, why);
	buf_printf(&b, ",\"tb_event\":%" PRIu64 ",\"tb_done\":%" PRIu64 "}", tb_event, mftb());
	emit("dlpar", b.data);
	buf_free(&b);
}

/* Reads the RTAS event log for PCI hotplug events, one at a time, on the boot CPU. */
static void *dlpar_thread(void *arg)
{
	static unsigned char log[RTAS_LOG_READ];
	pin_to(*(int *)arg, "dlpar");
	int fd = open(RTAS_EVENT_LOG, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		char text[96];
		snprintf(text, sizeof(text), "%s: %m: PCI hotplug events are not handled", RTAS_EVENT_LOG);
		reply_error(-1, text);
		return NULL;
	}
	for (;;) {
		ssize_t n = read(fd, log, sizeof(log));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= (ssize_t)sizeof(int)) {
			reply_error(-1, "reading the RTAS event log failed: PCI hotplug events are not handled");
			return NULL;
		}
		/* each entry: the kernel's event count (an int), then the log */
		handle_event(log + sizeof(int), (size_t)n - sizeof(int), mftb());
	}
}

/* ---- rng: read every virtio-rng device through /dev/hwrng ---- */

#define RNG_CLASS "/sys/class/misc/hw_random"
#define RNG_BYTES 256           /* more than virtio-rng's own buffer: the read needs the device */
#define RNG_WAIT_MS 2000

/* Sum of /proc/interrupts counts per "virtio<N>-..." row, into counts[N]. */
static void virtio_irqs(uint64_t counts[64])
{
	struct buf f = {0};
	memset(counts, 0, 64 * sizeof(*counts));
	if (!slurp("/proc/interrupts", &f))
		return;
	for (char *l = f.data, *next; l && *l; l = next) {
		next = strchr(l, '\n');
		if (next)
			*next++ = '\0';
		char *name = strstr(l, "virtio");
		char *colon = strchr(l, ':');
		if (!name || !colon)
			continue;
		unsigned dev = (unsigned)strtoul(name + 6, NULL, 10);
		if (dev >= 64)
			continue;
		uint64_t sum = 0;
		for (char *p = colon + 1; p < name;) {
			char *end;
			unsigned long long v = strtoull(p, &end, 10);
			if (end == p)
				break;
			sum += v;
			p = end;
		}
		counts[dev] += sum;
	}
	buf_free(&f);
}

/*
 * Read RNG_BYTES from /dev/hwrng in a child, which is killed after
 * RNG_WAIT_MS: a device that never answers blocks its reader in the kernel
 * (a killable wait), and must not block the agent.  Returns the bytes read.
 */
static long read_hwrng(uint64_t *elapsed_us)
{
	int pipefd[2];
	long got = 0;
	struct timespec t0, t1;
	if (pipe2(pipefd, O_CLOEXEC) != 0)
		return -1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid_t pid = fork();
	if (pid == 0) {
		char data[RNG_BYTES];
		long total = 0;
		int fd = open("/dev/hwrng", O_RDONLY);
		while (fd >= 0 && total < RNG_BYTES) {
			ssize_t n = read(fd, data + total, (size_t)(RNG_BYTES - total));
			if (n <= 0)
				break;
			total += n;
		}
		(void)!write(pipefd[1], &total, sizeof(total));
		_exit(0);
	}
	close(pipefd[1]);
	if (pid > 0) {
		struct pollfd p = {.fd = pipefd[0], .events = POLLIN};
		if (poll(&p, 1, RNG_WAIT_MS) == 1 && read(pipefd[0], &got, sizeof(got)) != sizeof(got))
			got = 0;
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	close(pipefd[0]);
	*elapsed_us = (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000);
	return pid > 0 ? got : -1;
}

/*
 * Select the hwrng name, in a child: after the switch the kernel adds early randomness from the
 * new RNG under its read lock, uninterruptibly, and the kernel's hwrng fill thread holds that
 * lock for as long as a device that never answers keeps it waiting.  The selection itself is
 * done before that wait; a child still waiting after RNG_WAIT_MS is left to finish on its own
 * (do_rng reaps it later).  Returns false if the name was refused or the child not started.
 */
static bool select_hwrng(const char *name)
{
	int pipefd[2];
	bool ok = false;
	if (pipe2(pipefd, O_CLOEXEC) != 0)
		return false;
	pid_t pid = fork();
	if (pid == 0) {
		char done = write_file(RNG_CLASS "/rng_current", name, strlen(name)) ? 1 : 0;
		(void)!write(pipefd[1], &done, 1);
		_exit(0);
	}
	close(pipefd[1]);
	if (pid > 0) {
		struct pollfd p = {.fd = pipefd[0], .events = POLLIN};
		char done = 0;
		if (poll(&p, 1, RNG_WAIT_MS) == 1)
			ok = read(pipefd[0], &done, 1) == 1 && done;
		else
			ok = true; /* still in the early-randomness wait: the switch is made */
	}
	close(pipefd[0]);
	return ok;
}

static void do_rng(long long req)
{
	struct buf available = {0}, current = {0}, out = {0};
	size_t n;
	char **pcis = list_dir("/sys/bus/pci/devices", "", &n);
	while (waitpid(-1, NULL, WNOHANG) > 0)
		; /* selections that waited longer than RNG_WAIT_MS last time */
	buf_printf(&out, "{\"req\":%lld,\"devices\":[", req);
	bool first = true;
	for (size_t i = 0; i < n; i++) {
		char dir[300];
		size_t k;
		snprintf(dir, sizeof(dir), "/sys/bus/pci/devices/%s", pcis[i]);
		char **virtio = list_dir(dir, "virtio", &k);
		for (size_t v = 0; v < k; v++) {
			buf_printf(&out, "%s{\"pci\":", first ? "" : ",");
			buf_json_str(&out, pcis[i]);
			buf_printf(&out, ",\"virtio\":");
			buf_json_str(&out, virtio[v]);
			buf_printf(&out, "}");
			first = false;
		}
		free_list(virtio, k);
	}
	free_list(pcis, n);
	buf_printf(&out, "],\"reads\":[");
	slurp(RNG_CLASS "/rng_current", &current);
	rstrip(&current);
	if (slurp(RNG_CLASS "/rng_available", &available)) {
		char *save = NULL;
		first = true;
		for (char *name = strtok_r(available.data, " \n", &save); name; name = strtok_r(NULL, " \n", &save)) {
			uint64_t before[64], after[64], us = 0;
			if (strcmp(name, "none") == 0)
				continue;
			bool selected = select_hwrng(name);
			virtio_irqs(before);
			long got = selected ? read_hwrng(&us) : -1;
			virtio_irqs(after);
			buf_printf(&out, "%s{\"name\":", first ? "" : ",");
			buf_json_str(&out, name);
			buf_printf(&out, ",\"bytes\":%ld,\"us\":%" PRIu64 ",\"irqs\":{", got, us);
			bool firstirq = true;
			for (int d = 0; d < 64; d++)
				if (after[d] > before[d]) {
					buf_printf(&out, "%s\"virtio%d\":%" PRIu64, firstirq ? "" : ",", d, after[d] - before[d]);
					firstirq = false;
				}
			buf_printf(&out, "}}");
			first = false;
		}
	}
	if (current.len && strcmp(current.data, "none") != 0)
		select_hwrng(current.data);
	buf_printf(&out, "]}");
	emit("rng", out.data);
	buf_free(&out);
	buf_free(&available);
	buf_free(&current);
}

static long long parse_id(const char *s)
{
	size_t n = strspn(s, "0123456789");
	if (n == 0 || n > 18 || s[n] != '\0')
		return -1;
	return strtoll(s, NULL, 10);
}

static void do_load(long long req, int mode)
{
	char why[128];
	if (set_load(mode, why, sizeof(why)))
		emitf("ok", "{\"req\":%lld}", req);
	else
		reply_error(req, why);
}

static void handle_command(char *line)
{
	char *space = strchr(line, ' ');
	long long req = space ? parse_id(space + 1) : -1;
	if (space)
		*space = '\0';
	bool word = *line && strspn(line, "abcdefghijklmnopqrstuvwxyz") == strlen(line);

	if (!word || req < 0) {
		reply_error(req, "malformed command, expected '<command> <id>'");
	} else if (strcmp(line, "probe") == 0) {
		do_probe(req);
	} else if (strcmp(line, "tbstats") == 0) {
		do_tbstats(req);
	} else if (strcmp(line, "tbwarp") == 0) {
		do_tbwarp(req);
	} else if (strcmp(line, "tbreset") == 0) {
		do_tbreset(req);
	} else if (strcmp(line, "ipi") == 0) {
		do_ipi(req);
	} else if (strcmp(line, "rng") == 0) {
		do_rng(req);
	} else if (strcmp(line, "loadidle") == 0) {
		do_load(req, LOAD_IDLE);
	} else if (strcmp(line, "loadbusy") == 0) {
		do_load(req, LOAD_BUSY);
	} else if (strcmp(line, "loadtimer") == 0) {
		do_load(req, LOAD_TIMER);
	} else {
		char text[MAX_COMMAND + 32];
		snprintf(text, sizeof(text), "unknown command '%s'", line);
		reply_error(req, text);
	}
}

/* Read lines from the console; raw mode delivers CR for Enter, accept both. */
static void command_loop(void)
{
	char line[MAX_COMMAND + 1];
	size_t len = 0;
	bool too_long = false;

	for (;;) {
		char chunk[256];
		ssize_t n = read(STDIN_FILENO, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* Console closed: keep the heartbeats going, stop reading. */
			reply_error(-1, "console input closed");
			for (;;)
				pause();
		}
		for (ssize_t i = 0; i < n; i++) {
			char c = chunk[i];
			if (c == '\n' || c == '\r') {
				line[len] = '\0';
				if (too_long)
					reply_error(-1, "command too long");
				else if (len)
					handle_command(line);
				len = 0;
				too_long = false;
			} else if (len < MAX_COMMAND) {
				line[len++] = c;
			} else {
				too_long = true;
			}
		}
	}
}

int main(void)
{
	struct termios t;
	pthread_condattr_t monotonic;
	pthread_t tid;
	struct buf online = {0};

	crc32_init();
	if (pthread_condattr_init(&monotonic) != 0 ||
	    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC) != 0 ||
	    pthread_cond_init(&mode_acked, &monotonic) != 0)
		die("pthread_cond_init");

	/* Raw, no echo: commands never show up in our output, no signals from
	 * control characters.  Output keeps ONLCR so the console log reads
	 * normally to a person (lines end in CR LF; the harness strips CR). */
	if (tcgetattr(STDIN_FILENO, &t) == 0) {
		cfmakeraw(&t);
		t.c_oflag |= OPOST | ONLCR;
		if (tcsetattr(STDIN_FILENO, TCSANOW, &t) != 0)
			die("tcsetattr");
	}

	tb_freq = cpuinfo_tb_freq();
	if (tb_freq == 0) {
		errno = ENOENT;
		die("no \"timebase\" in /proc/cpuinfo");
	}
	if (!slurp("/sys/devices/system/cpu/online", &online))
		die("/sys/devices/system/cpu/online");
	rstrip(&online);
	struct buf hello = {0};
	buf_printf(&hello, "{\"agent\":%d,\"tb_freq\":%" PRIu64 ",\"cpus\":", PROTOCOL_VERSION, tb_freq);
	buf_json_str(&hello, online.data);
	buf_printf(&hello, "}");
	emit("hello", hello.data);
	buf_free(&hello);

	/* Commands and the supervisor stay on the lowest online CPU (the list
	 * is ascending), the boot CPU: a secondary CPU that stops after a
	 * migration (a finding) must not take the command loop with it, so
	 * that probe, tbstats and ipi can still say which CPU stopped.  The
	 * per-CPU threads pin themselves elsewhere. */
	home_cpu = (int)strtol(online.data, NULL, 10);
	pin_to(home_cpu, "main");
	start_online_cpus(online.data);
	buf_free(&online);
	if ((errno = pthread_create(&tid, NULL, supervisor, NULL)) != 0)
		die("pthread_create supervisor");
	if ((errno = pthread_create(&tid, NULL, dlpar_thread, &home_cpu)) != 0)
		die("pthread_create dlpar");
	command_loop();
	return 0;
}

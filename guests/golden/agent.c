/*
 * goldmig guest agent: speaks PROTOCOL.md (version 1) on hvc0.
 *
 * Started by /init with stdin/stdout/stderr on /dev/hvc0.  Three threads:
 *
 *   watcher  samples mftb in a tight loop, keeps the backward-step/forward-gap
 *            statistics and emits the `busy` heartbeat (CPU progress);
 *   ticker   emits the `tick` heartbeat every 250 ms of nanosleep (timer
 *            interrupts still arrive);
 *   main     reads commands from the console and answers them.
 *
 * Every output line goes through emit(), which holds one mutex while it
 * assigns the sequence number and writes the whole line, so lines never
 * interleave and seq order is write order.
 *
 * Build: powerpc64le-linux-gnu-gcc -static -O2 -pthread -Wall -Wextra
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define PROTOCOL_VERSION 1
#define BUSY_PER_SECOND 4       /* target busy beat rate */
#define CALIBRATION_WINDOWS 4   /* one-off calibration: 4 windows of 1/BUSY_PER_SECOND s */
#define TICK_NS 250000000L      /* tick heartbeat period */
#define MAX_COMMAND 128         /* longest accepted command line */

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
	buf_printf(&b, ",\"pci\":");
	json_pci(&b);
	buf_printf(&b, ",\"phb_ranges\":");
	json_phb_ranges(&b);
	buf_printf(&b, "}");
	emit("probe", b.data);
	buf_free(&names);
	buf_free(&b);
}

/* ---- timebase watcher ---- */

/*
 * The watcher owns its statistics; nobody else touches them, so the hot loop
 * takes no lock.  tbstats/tbreset are handed to it through this one-slot
 * mailbox (a plain load per iteration) and it writes the reply itself.
 */
enum { REQ_NONE, REQ_STATS, REQ_RESET };
static atomic_int mailbox_kind = REQ_NONE;
static long long mailbox_req; /* written before mailbox_kind is published */

static uint64_t tb_freq;

static void watcher_request(uint64_t *samples, uint64_t *max_back, uint64_t *max_fwd,
			    uint64_t *max_fwd_at, uint64_t last)
{
	int kind = atomic_load_explicit(&mailbox_kind, memory_order_acquire);
	if (kind == REQ_STATS) {
		emitf("tbstats",
		      "{\"req\":%lld,\"samples\":%" PRIu64 ",\"max_back\":%" PRIu64
		      ",\"max_fwd\":%" PRIu64 ",\"max_fwd_at\":%" PRIu64 ",\"last\":%" PRIu64 "}",
		      mailbox_req, *samples, *max_back, *max_fwd, *max_fwd_at, last);
	} else {
		*samples = *max_back = *max_fwd = 0;
		*max_fwd_at = 0;
		emitf("ok", "{\"req\":%lld}", mailbox_req);
	}
	atomic_store_explicit(&mailbox_kind, REQ_NONE, memory_order_release);
}

static void *watcher(void *arg)
{
	(void)arg;
	uint64_t samples = 0, max_back = 0, max_fwd = 0, max_fwd_at = 0;
	uint64_t prev = mftb();
	const uint64_t window_ticks = tb_freq / BUSY_PER_SECOND;
	uint64_t window_start = prev, best_window = 0, windows = 0;
	uint64_t iter = 0, busy_every = 0, countdown = 0, beat = 0;

	for (;;) {
		uint64_t cur = mftb();
		if (cur < prev) {
			if (prev - cur > max_back)
				max_back = prev - cur;
		} else if (cur - prev > max_fwd) {
			max_fwd = cur - prev;
			max_fwd_at = cur;
		}
		samples++;
		prev = cur;
		iter++;

		if (atomic_load_explicit(&mailbox_kind, memory_order_relaxed) != REQ_NONE)
			watcher_request(&samples, &max_back, &max_fwd, &max_fwd_at, cur);

		if (busy_every == 0) {
			/* Calibration, once: count iterations in a few windows of
			 * 1/BUSY_PER_SECOND s and keep the best, since interference
			 * (boot leftovers, a busy host) only ever lowers a count.
			 * After that the beat is driven by the iteration count
			 * alone, so it measures CPU progress, not time. */
			if (cur < window_start || cur - window_start >= window_ticks) {
				if (iter > best_window)
					best_window = iter;
				window_start = cur;
				iter = 0;
				if (++windows == CALIBRATION_WINDOWS) {
					busy_every = best_window ? best_window : 1;
					countdown = busy_every;
				}
			}
		} else if (--countdown == 0) {
			countdown = busy_every;
			beat++;
			emitf("busy", "{\"n\":%" PRIu64 ",\"iter\":%" PRIu64 ",\"tb\":%" PRIu64 "}",
			      beat, iter, cur);
		}
	}
	return NULL;
}

/* ---- tick heartbeat ---- */

static void *ticker(void *arg)
{
	(void)arg;
	for (uint64_t n = 1;; n++) {
		struct timespec ts = {0, TICK_NS};
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
		emitf("tick", "{\"n\":%" PRIu64 ",\"tb\":%" PRIu64 "}", n, mftb());
	}
	return NULL;
}

/* ---- commands ---- */

/* Decimal request id, or -1 if s is not 1..18 digits. */
static long long parse_id(const char *s)
{
	size_t n = strspn(s, "0123456789");
	if (n == 0 || n > 18 || s[n] != '\0')
		return -1;
	return strtoll(s, NULL, 10);
}

/* Hand a request to the watcher and wait until it has replied, so replies
 * come out in command order and the one-slot mailbox is never overwritten. */
static void post_to_watcher(int kind, long long req)
{
	const struct timespec ms = {0, 1000000L};
	mailbox_req = req;
	atomic_store_explicit(&mailbox_kind, kind, memory_order_release);
	while (atomic_load_explicit(&mailbox_kind, memory_order_acquire) != REQ_NONE)
		nanosleep(&ms, NULL);
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
		post_to_watcher(REQ_STATS, req);
	} else if (strcmp(line, "tbreset") == 0) {
		post_to_watcher(REQ_RESET, req);
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
	pthread_t tid;

	crc32_init();

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
	emitf("hello", "{\"agent\":%d,\"tb_freq\":%" PRIu64 "}", PROTOCOL_VERSION, tb_freq);

	if (pthread_create(&tid, NULL, ticker, NULL) != 0)
		die("pthread_create ticker");
	if (pthread_create(&tid, NULL, watcher, NULL) != 0)
		die("pthread_create watcher");
	command_loop();
	return 0;
}
